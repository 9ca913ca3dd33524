"""The device journal, ``journal.db``: the chain's index (:mod:`.chain_index`) and the
uploader's ledger (:mod:`.sync_ledger`). Every statement on ``journal.db`` is in this
package; everything else asks it (the import contracts keep ``sqlite3`` here).
"""
