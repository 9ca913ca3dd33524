"""Boot: the ``boot`` entry (:func:`seal_boot`), and recovery when the last boot ended
inside a session (power cut, battery shutdown).

What reached the disk is kept — spooled segments cut back to their last complete fragment
(:mod:`agent.fragments`) and sealed as recovered — the gap is logged, and recording resumes
in the same session.

Example::

    BootRecovery(config, chain, segments, continuity).recover(life.resume, before_boot)
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.chain import ChainWriter
from agent.continuity import Continuity
from agent.fragments import read_sidecar, truncate_to_fragments
from agent.journal.chain_index import Journal
from agent.media import Sealed, WrittenSegment
from agent.segments import Segmenter
from agent.session import OpenSession
from common.archive.media import probe_file
from common.settings import MAIN_TRACK, Category, DeviceConfig
from evidence.entries import Boot, Config
from evidence.manifest import UNKNOWN_LOCATION
from evidence.seal import Entry, Moment
from evidence.session_bodies import InterruptionEnd, SessionOpen

log = logging.getLogger(__name__)

SOFTWARE = "unbroken 0.1.0"


def seal_boot(chain: ChainWriter, journal: Journal, config: DeviceConfig) -> None:
    """The ``boot`` entry, and the settings in a ``config`` entry when they changed."""
    settings = config.model_dump(mode="json")
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    chain.seal_body(Boot(SOFTWARE, digest))
    last_config = journal.last_body(Config.KIND, Config.from_body)
    if last_config is None or last_config.sha256 != digest:
        chain.seal_body(Config(digest, settings))


class BootRecovery:
    def __init__(
        self, config: DeviceConfig, chain: ChainWriter, segments: Segmenter, continuity: Continuity
    ) -> None:
        self.config = config
        self.chain = chain
        self.journal = chain.journal
        self.segments = segments
        self.continuity = continuity

    def recover(
        self, resume: Callable[[OpenSession, SessionOpen], None], before_boot: Entry | None
    ) -> None:
        """If a session was left open: ``resume`` it, seal what the spool kept, log the gap.
        ``before_boot``: the chain's last entry before this boot started."""
        opened = self.journal.session_left_open()
        if opened is None:
            self.segments.clean_spool()
            log.info("boot: no session was left open")
            return
        sid = str(opened.session)
        body = SessionOpen.from_body(opened.body)
        sealed = self.journal.segments(sid)
        counts: dict[str, int] = {}
        for m in sealed:
            counts[m.track_name] = counts.get(m.track_name, 0) + 1
        session = OpenSession(
            sid,
            Category(body.category or self.config.session.category),
            list(body.badges),
            Moment(**opened.payload["at"]),
            next_index=counts,
        )
        resume(session, body)
        last_end = max((m.end.wall for m in sealed), default=None)
        for path in self.segments.spooled():
            info = read_sidecar(path)
            if info is None or info.get("session") != sid:
                self.segments.discard(path)
                continue
            end = self._seal_recovered(path, info)
            if end is not None:
                last_end = max(last_end or end, end)
                log.warning("boot: sealed %s as recovered after the power cut", path.name)
        self.segments.clean_spool()
        now = self.chain.now()
        open_gap = self.journal.open_interruption(sid)
        if open_gap is not None:
            # sealed before a clean shutdown inside the session (battery): it ends now
            self.chain.seal_body(InterruptionEnd(open_gap, now), sid)
            self.continuity.ended_at_boot(open_gap, now)
            return
        # The gap starts where the footage on record ends (none: at the last entry).
        start_wall = last_end
        if start_wall is None:
            start_wall = float((before_boot or opened).payload["at"]["wall"])
        self.continuity.found_over(
            "power_loss",
            Moment(start_wall, now.mono, False),
            now,
            ["video", "audio", "location"],
            "found at boot: the device lost power inside the session",
        )

    def _seal_recovered(self, path: Path, info: dict[str, Any]) -> float | None:
        """Seal a spooled segment cut by the power loss; returns its end (wall)."""
        if truncate_to_fragments(path) == 0:
            self.segments.discard(path)
            return None
        facts = probe_file(path)
        if facts.video_frames == 0 or facts.decode_error:
            self.segments.discard(path)
            return None
        fps = self.config.recording.fps
        start = Moment(**info["start"])
        seconds = facts.video_frames / fps
        end = Moment(start.wall + seconds, start.mono + seconds, start.synced)
        written = WrittenSegment(
            path,
            int(info["first_frame"]),
            facts.video_frames,
            facts.audio_samples,
            facts.size,
            facts.sha256,
            int(info.get("bitrate", self.config.recording.video_bitrate)),
            None if facts.encrypted is None else Sealed(facts.encrypted),
        )
        track = str(info.get("track", MAIN_TRACK))
        if track not in self.config.tracks:
            self.segments.discard(path)
            return None
        self.segments.seal(
            written,
            start,
            end,
            UNKNOWN_LOCATION,
            facts.audio_samples > 0,
            track,
            recovered=True,
        )
        return end.wall
