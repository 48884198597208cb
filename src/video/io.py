"""Reading and writing video files with PyAV: the frames of a time range, H.264 output, audio copy.

Frames travel as PIL RGB images at the source's size; the caller resizes them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from src.common.errors import UserError
from src.common.paths import check_input_file

log = logging.getLogger(__name__)

# Audio codecs an MP4 file can hold as they are; others are re-encoded to AAC.
MP4_AUDIO_CODECS = {"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"}


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    width: int
    height: int
    fps: Fraction
    duration: float  # seconds (estimated from the container where the stream does not say)
    has_audio: bool


@dataclass(frozen=True)
class Frame:
    index: int  # position in the selected sequence, from 0
    time: float  # seconds from the start of the source
    image: Image.Image


def _open(path: Path) -> av.container.InputContainer:
    check_input_file(path, "video")
    try:
        return av.open(str(path))
    except av.error.FFmpegError as error:
        raise UserError(f"{path} is not a readable video ({error.strerror or error})") from None


def time_base(stream: av.stream.Stream) -> Fraction:
    """The stream's time unit in seconds (every demuxed stream has one)."""
    if stream.time_base is None:
        raise UserError(f"stream {stream.index} has no time base")
    return Fraction(stream.time_base)


def _stream_start(stream: av.video.stream.VideoStream) -> float:
    return float(stream.start_time * time_base(stream)) if stream.start_time is not None else 0.0


def probe(path: str | os.PathLike) -> VideoInfo:
    """Check that `path` is a video with at least one decodable frame and describe it."""
    path = Path(path)
    with _open(path) as container:
        if not container.streams:
            raise UserError(f"{path} holds no streams (an empty, zero-length clip)")
        if not container.streams.video:
            kinds = ", ".join(sorted({s.type for s in container.streams})) or "no streams"
            raise UserError(f"{path} has no video stream ({kinds})")
        stream = container.streams.video[0]
        fps = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not fps or fps <= 0:
            raise UserError(f"{path}: the video stream has no frame rate")
        if stream.duration is not None:
            duration = float(stream.duration * time_base(stream))
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = float(stream.frames / fps) if stream.frames else 0.0
        try:
            first = next(container.decode(stream), None)
        except av.error.FFmpegError as error:
            raise UserError(f"{path}: the first frame cannot be decoded ({error.strerror or error})") from None
        if first is None:
            raise UserError(f"{path} has no video frames (a zero-length clip)")
        return VideoInfo(path, first.width, first.height, Fraction(fps), duration, bool(container.streams.audio))


def check_range(info: VideoInfo, start: float, end: float | None) -> float:
    """The end of the selected range in seconds (the clip's end when `end` is null)."""
    if start < 0:
        raise UserError(f"video.start={start}: must be >= 0 (seconds)")
    if start >= info.duration:
        raise UserError(f"video.start={start}: past the end of {info.path.name} ({info.duration:.2f} s long)")
    if end is not None and end <= start:
        raise UserError(f"video.end={end}: must be after video.start={start}")
    return info.duration if end is None else min(end, info.duration)


def read_frames(
    info: VideoInfo, start: float, end: float, max_frames: int | None = None, fps: Fraction | None = None
) -> Iterator[Frame]:
    """The frames shown between `start` and `end` seconds, at most `max_frames`.

    With `fps`, the clip is resampled: output frame k shows the source frame nearest to
    start + k / fps (frames repeat or are dropped), as ffmpeg's fps filter does.
    An undecodable frame part-way is a UserError (the frames before it were yielded).
    """
    source_step = 1.0 / float(info.fps)
    limit = max_frames if max_frames is not None else float("inf")
    count = 0
    with _open(info.path) as container:
        stream = container.streams.video[0]
        origin = _stream_start(stream)
        if start > 0:
            container.seek(int((start + origin) / time_base(stream)), stream=stream, backward=True, any_frame=False)
        decoded = _decoded(container, stream, info.path)
        previous: tuple[float, av.VideoFrame] | None = None
        for time, frame in decoded:
            time -= origin
            if time < start - source_step / 2:
                continue
            if fps is None:
                if time >= end - 1e-6:
                    return
                yield Frame(count, time, frame.to_image())
                count += 1
            else:  # resampling: a frame is emitted once its successor's time is known
                if previous is not None:
                    for output in _resampled(previous, (time + previous[0]) / 2, start, end, fps, count, limit):
                        yield output
                        count += 1
                previous = (time, frame)
            if count >= limit:  # before decoding another frame, which may be the unreadable one
                return
        if fps is not None and previous is not None:
            # The last frame shows until the end of the range.
            for output in _resampled(previous, float("inf"), start, end, fps, count, limit):
                yield output
                count += 1


def _resampled(
    current: tuple[float, av.VideoFrame],
    boundary: float,
    start: float,
    end: float,
    fps: Fraction,
    count: int,
    limit: float,
) -> Iterator[Frame]:
    """Output frames whose target time falls before `boundary`, the midpoint to the next source frame."""
    time, frame = current
    image = None
    while count < limit:
        target = start + count / float(fps)
        if target >= boundary or target >= end - 1e-6:
            return
        image = image or frame.to_image()
        yield Frame(count, target, image.copy())
        count += 1


def _decoded(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, path: Path
) -> Iterator[tuple[float, av.VideoFrame]]:
    last = 0.0
    iterator = container.decode(stream)
    while True:
        try:
            frame = next(iterator)
        except StopIteration:
            return
        except av.error.FFmpegError as error:
            raise UserError(
                f"{path}: a frame after {last:.2f} s cannot be decoded ({error.strerror or error})"
            ) from None
        if frame.pts is None:
            continue
        last = float(frame.pts * time_base(stream))
        yield last, frame


# -- writing ----------------------------------------------------------------------------------


def even_size(image: np.ndarray) -> np.ndarray:
    """H.264 in 4:2:0 needs an even width and height: repeat the last row or column if odd."""
    height, width = image.shape[:2]
    return np.pad(image, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")


def write_video(
    frames: Iterable[Image.Image],
    path: str | os.PathLike,
    fps: Fraction,
    audio_from: Path | None = None,
    audio_start: float = 0.0,
    audio_end: float | None = None,
    crf: int = 18,
) -> Path:
    """Encode `frames` as H.264 at `fps` into an MP4, written atomically; with `audio_from`,
    that file's first audio track between `audio_start` and `audio_end` seconds is added."""
    path = Path(path)
    temporary = path.with_name(path.stem + ".tmp" + path.suffix)
    with av.open(str(temporary), "w") as output:
        video = output.add_stream("libx264", rate=fps, options={"crf": str(crf), "preset": "medium"})
        video.pix_fmt = "yuv420p"
        started = False
        audio_stream, audio_packets = None, None
        for index, image in enumerate(frames):
            array = even_size(np.asarray(image.convert("RGB")))
            if not started:
                video.height, video.width = array.shape[:2]
                started = True
                if audio_from is not None:
                    audio_stream, audio_packets = _audio_track(output, audio_from, audio_start, audio_end)
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts = index
            frame.time_base = Fraction(1) / fps
            output.mux(video.encode(frame))
        if not started:
            raise ValueError("write_video: no frames")
        output.mux(video.encode(None))
        if audio_stream is not None and audio_packets is not None:
            for packet in audio_packets():
                packet.stream = audio_stream
                output.mux(packet)
    os.replace(temporary, path)
    return path


def _audio_track(output: av.container.OutputContainer, source: Path, start: float, end: float | None):  # noqa: ANN202
    """Add an audio stream to `output` (a copy of `source`'s first track, or its AAC re-encoding)
    and return it with a function that yields its packets, time-shifted to start at 0."""
    with av.open(str(source)) as probe_container:
        if not probe_container.streams.audio:
            return None, None
        template = probe_container.streams.audio[0]
        codec_name = template.codec_context.name
        if codec_name in MP4_AUDIO_CODECS:
            stream = output.add_stream_from_template(template)
            copy = True
        else:
            stream = output.add_stream("aac", rate=template.codec_context.sample_rate)
            copy = False

    def packets() -> Iterator[av.Packet]:
        with av.open(str(source)) as container:
            track = container.streams.audio[0]
            base = time_base(track)
            offset = int(round(start / base)) + (track.start_time or 0)
            if copy:
                for packet in container.demux(track):
                    if packet.pts is None or packet.size == 0:
                        continue
                    seconds = float((packet.pts - (track.start_time or 0)) * base)
                    if seconds < start:
                        continue
                    if end is not None and seconds >= end:
                        break
                    packet.pts -= offset
                    packet.dts = packet.pts if packet.dts is None else packet.dts - offset
                    yield packet
                return
            resampler = av.AudioResampler(format="fltp", layout=stream.layout, rate=stream.rate)
            for frame in container.decode(track):
                seconds = float((frame.pts - (track.start_time or 0)) * base) if frame.pts is not None else 0.0
                if seconds < start:
                    continue
                if end is not None and seconds >= end:
                    break
                frame.pts = None
                for converted in resampler.resample(frame):
                    yield from stream.encode(converted)
            yield from stream.encode(None)

    return stream, packets
