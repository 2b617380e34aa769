"""
Frame specs, chunking and command placeholders: pure functions.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from masterd.jobs import (
    TRANSITIONS,
    CommandError,
    FrameSpecError,
    TaskState,
    chunkFrames,
    countFrames,
    expandCommand,
    formatFrames,
    parseFrames,
)
from masterd.jobs.command import checkArgument
from masterd.jobs.states import sources


class FrameSpecTests(SynchronousTestCase):
    def test_forms(self) -> None:
        self.assertEqual(parseFrames("1-5"), [1, 2, 3, 4, 5])
        self.assertEqual(parseFrames("7"), [7])
        self.assertEqual(parseFrames("1-10x3"), [1, 4, 7, 10])
        self.assertEqual(
            parseFrames("1-100x5,200,210-212"), [*range(1, 101, 5), 200, 210, 211, 212]
        )
        self.assertEqual(parseFrames(" 3 - 5 , 9 "), [3, 4, 5, 9])
        self.assertEqual(parseFrames("-3--1"), [-3, -2, -1])
        self.assertEqual(parseFrames([5, 1, 3]), [5, 1, 3])
        self.assertEqual(countFrames("1-100x5,200"), 21)

    def test_malformed(self) -> None:
        for spec, words in [
            ("", "is empty"),
            ("1-", "is not a frame"),
            ("-", "is not a frame"),
            ("5-1", "runs backwards"),
            ("a-b", "is not a frame"),
            ("1,,2", "is not a frame"),
            ("1-5x0", "step of 0"),
            ("1-5x", "is not a frame"),
            ("1.5", "is not a frame"),
            ("1-3,2", "frame 2 appears more than once"),
            ("99999999999", "out of range"),
        ]:
            with self.assertRaises(FrameSpecError, msg=spec) as caught:
                parseFrames(spec)
            self.assertIn(words, str(caught.exception), spec)
        self.assertRaises(FrameSpecError, parseFrames, [])
        self.assertRaises(FrameSpecError, parseFrames, [1, True])
        self.assertRaises(FrameSpecError, parseFrames, [1, 1])

    def test_limit(self) -> None:
        """
        A spec over the limit is refused before any frame is listed.
        """
        with self.assertRaises(FrameSpecError) as caught:
            parseFrames("1-2000000000", maxFrames=1_000_000)
        self.assertIn("names 2000000000 frames; the limit is 1000000", str(caught.exception))
        self.assertEqual(len(parseFrames("1-1000", maxFrames=1000)), 1000)
        self.assertRaises(FrameSpecError, parseFrames, "1-1001", 1000)

    def test_format(self) -> None:
        self.assertEqual(formatFrames([1, 2, 3, 4]), "1-4")
        self.assertEqual(formatFrames([1, 3, 5, 9, 10]), "1-5x2,9,10")
        self.assertEqual(formatFrames([5, 4, 3]), "5,4,3")
        self.assertEqual(formatFrames([]), "")

    @given(st.lists(st.integers(-10_000, 10_000), unique=True, min_size=1, max_size=300))
    def test_roundTrip(self, frames: list[int]) -> None:
        """
        parse(format(x)) == x, in order, for any list of distinct frames.
        """
        self.assertEqual(parseFrames(formatFrames(frames)), frames)

    @given(
        st.lists(st.integers(0, 1000), unique=True, min_size=1, max_size=200),
        st.integers(1, 50),
    )
    def test_chunks(self, frames: list[int], chunk: int) -> None:
        chunks = chunkFrames(frames, chunk)
        self.assertEqual([f for c in chunks for f in c], frames)
        self.assertTrue(all(len(c) == chunk for c in chunks[:-1]))
        self.assertTrue(1 <= len(chunks[-1]) <= chunk)
        self.assertRaises(ValueError, chunkFrames, frames, 0)


class CommandTests(SynchronousTestCase):
    def test_expand(self) -> None:
        self.assertEqual(
            expandCommand(["r", "{frame:04d}", "{start}-{end}", "{frames}", "{{x}}"], [7, 8, 9]),
            ["r", "0007", "7-9", "7,8,9", "{x}"],
        )

    def test_refused(self) -> None:
        for argument in ["{fram}", "{}", "{0}", "{frame.x}", "{", "}", "{frame:q}"]:
            self.assertRaises(CommandError, checkArgument, argument)
        checkArgument("{frames!s}")
        checkArgument("plain")


class StateMachineTests(SynchronousTestCase):
    def test_table(self) -> None:
        self.assertEqual(TRANSITIONS[TaskState.done], frozenset())
        self.assertEqual(sources(TaskState.assigned), frozenset({TaskState.queued}))
        self.assertEqual(
            sources(TaskState.canceled),
            frozenset({TaskState.waiting, TaskState.queued, TaskState.assigned, TaskState.running}),
        )
        self.assertEqual(
            sources(TaskState.done), frozenset({TaskState.assigned, TaskState.running})
        )
