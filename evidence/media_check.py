"""Whether each sealed segment's file holds what its manifest sealed.

The I/O shell reads and decodes every file a manifest names and hands over what it found
(:class:`MediaFacts`); :class:`SegmentFiles` sets that against the manifest: present (or
lawfully archived), not named twice, its bytes, its encryption, its decoding. A file whose
bytes differ is named only once every manifest is known (:meth:`name_mismatched`): a swap
shows only against the others.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass

from evidence.manifest import SegmentManifest
from evidence.verify_report import NameProblem, Problem, SessionReport


@dataclass(frozen=True)
class MediaFacts:
    """What the I/O shell found in one media file."""

    size: int
    sha256: str
    video_frames: int = 0
    video_start: float | None = None  # seconds, first frame's presentation time
    video_end: float | None = None  # seconds, last frame's time plus one frame
    audio_samples: int = 0
    decode_error: str | None = None
    encrypted: str | None = None  # the agency key id an encrypted file is encrypted to
    # False: encrypted and not decrypted here: frames and audio are the file's own
    # (authenticated, but only checked with the agency's key) counts, nothing decoded
    decoded: bool = True
    plain_sha256: str | None = None  # of the MP4 inside an encrypted file, once decrypted


class SegmentFiles:
    """Each segment's file against its manifest, as the chain is read in order."""

    def __init__(
        self,
        media: Mapping[str, MediaFacts | None],
        archived: Set[str],
        unsafe_paths: Mapping[str, str],
        problem: NameProblem,
    ) -> None:
        self.media = media
        self.archived = archived
        self.unsafe_paths = unsafe_paths
        self.problem = problem
        # (file, what was found, sealed size, session)
        self.mismatched: list[tuple[str, MediaFacts, int, str]] = []
        self.in_the_clear: dict[str, int] = {}  # per session: segments stored unencrypted
        self.sealed_by: dict[str, str] = {}  # file name -> the entry that sealed it first
        self.not_decoded = 0  # encrypted segments checked by their framing only

    def check(self, s: SessionReport, m: SegmentManifest, where: str) -> MediaFacts | None:
        """What was found in the file ``m`` seals, if it holds what was sealed (else None,
        a problem named, or the segment counted as archived)."""
        file = m.file
        if (first := self.sealed_by.setdefault(file, where)) != where:
            self.problem("resealed_file", file, f"sealed by {first} and again by {where}", s.id)
            return None
        facts = self.media.get(file)
        if file in self.unsafe_paths:
            self.problem("unsafe_path", file, f"sealed by {where}: {self.unsafe_paths[file]}", s.id)
            return None
        if facts is None and m.sha256 in self.archived:
            s.archived += 1
            return None
        if facts is None:
            self.problem("missing_segment", file, f"sealed by {where} but absent", s.id)
            return None
        if facts.sha256 != m.sha256:
            # Named once all manifests are known: a swap shows only against the others.
            self.mismatched.append((file, facts, m.size, s.id))
            return None
        if not self._encryption(s, m, facts):
            return None
        if facts.decode_error:
            self.problem("undecodable", file, facts.decode_error, s.id)
            return None
        if facts.video_frames != m.video.frames:
            self.problem(
                "frame_count",
                file,
                f"decodes to {facts.video_frames} frames, sealed with {m.video.frames}",
                s.id,
            )
        if m.audio and facts.audio_samples == 0:
            self.problem("no_audio", file, "sealed with audio, decodes to none", s.id)
        return facts

    def _encryption(self, s: SessionReport, m: SegmentManifest, facts: MediaFacts) -> bool:
        """The file is stored as its manifest says; False if not (a problem named)."""
        enc = m.encryption
        if enc is None or not enc.encrypted:
            if facts.encrypted is not None:
                self.problem("encryption_mismatch", m.file, "encrypted, sealed as not", s.id)
                return False
            self.in_the_clear[s.id] = self.in_the_clear.get(s.id, 0) + (enc is not None)
            return True
        if facts.encrypted != enc.key:
            found = "not encrypted" if facts.encrypted is None else f"to key {facts.encrypted}"
            self.problem("encryption_mismatch", m.file, f"{found}, sealed to {enc.key}", s.id)
            return False
        if not facts.decoded:
            self.not_decoded += 1
        elif enc.plain_sha256 and facts.plain_sha256 not in (None, enc.plain_sha256):
            self.problem("plaintext_mismatch", m.file, "decrypts to other bytes", s.id)
            return False
        return True

    def notices(self) -> list[Problem]:
        """What a reader must know of how the media is stored (not faults)."""
        notices = []
        for sid, n in self.in_the_clear.items():
            if n:
                notices.append(
                    Problem(
                        "in_the_clear",
                        f"session {sid}",
                        f"{n} segments stored unencrypted (encryption turned off)",
                        sid,
                    )
                )
        if self.not_decoded:
            notices.append(
                Problem(
                    "not_decoded",
                    "segments/",
                    f"{self.not_decoded} segments are encrypted to the agency: their bytes "
                    "and framing were checked, not their pictures and sound (give the "
                    "agency's evidence key to decode them)",
                )
            )
        return notices

    def name_mismatched(self, sealed: Mapping[str, str]) -> None:
        """Name each file whose bytes differ from its manifest's, knowing every file's
        sealed SHA-256 (``sealed``: SHA-256 -> file): swapped, truncated or altered."""
        for file, found, sealed_size, sid in self.mismatched:
            other = sealed.get(found.sha256)
            if other and other != file:
                self.problem("swapped_segment", file, f"holds the bytes sealed for {other}", sid)
            elif found.size < sealed_size:
                self.problem(
                    "truncated_segment", file, f"{found.size} bytes, sealed with {sealed_size}", sid
                )
            else:
                self.problem("hash_mismatch", file, "bytes differ from the sealed SHA-256", sid)
