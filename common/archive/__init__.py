"""Evidence at rest, read the one way for both sides: the :class:`Archive` a reader
needs (:mod:`common.archive.archive`), a device's data directory as one
(:mod:`common.archive.device_directory`; the store's holdings are
``store.archive.StoreArchive``), what a segment's media holds
(:mod:`common.archive.media`), verification (:mod:`common.archive.verify`) and the export
of a session (:mod:`common.archive.export`)."""
