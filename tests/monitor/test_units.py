"""salvusctl.units: one way to show byte counts everywhere."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from salvusctl.units import humanBytes, parseBytes


class HumanBytesTests(SynchronousTestCase):
    def test_magnitudes(self):
        """The largest unit that keeps the number >= 1; trailing zeros dropped."""
        cases = [(0, "0 B"), (1, "1 B"), (1023, "1023 B"), (1024, "1 KiB"), (1536, "1.5 KiB"),
                 (10 * 1024**2, "10 MiB"), (int(2.25 * 1024**3), "2.2 GiB"), (5 * 1024**4, "5 TiB"),
                 (1024**7, "1024 EiB"), (-2048, "-2 KiB"), (None, "-")]
        for n, text in cases:
            self.assertEqual(humanBytes(n), text, n)

    def test_roundingCrossesTheUnit(self):
        """1023.96 KiB does not print as "1024 KiB"."""
        self.assertEqual(humanBytes(1024**2 - 40), "1 MiB")

    def test_decimalsAndSI(self):
        self.assertEqual(humanBytes(1234567, decimals=2), "1.18 MiB")
        self.assertEqual(humanBytes(1234567, binary=False), "1.2 MB")
        self.assertEqual(humanBytes(999, binary=False), "999 B")

    def test_badInput(self):
        for bad in ("12", True, [1]):
            with self.assertRaises(TypeError):
                humanBytes(bad)
        with self.assertRaises(ValueError):
            humanBytes(float("nan"))
        with self.assertRaises(ValueError):
            humanBytes(5, decimals=-1)


class ParseBytesTests(SynchronousTestCase):
    def test_forms(self):
        cases = [(4096, 4096), ("4096", 4096), ("512M", 512 * 1024**2), ("1.5GiB", 1536 * 1024**2),
                 ("1.5 GiB", 1536 * 1024**2), ("200kB", 200_000), ("2MB", 2_000_000), ("1K", 1024)]
        for text, n in cases:
            self.assertEqual(parseBytes(text), n, text)

    def test_roundTrip(self):
        self.assertEqual(parseBytes(humanBytes(3 * 1024**3)), 3 * 1024**3)

    def test_bad(self):
        for bad in ("lots", "12XB", "-5M", -1, None):
            with self.assertRaises(ValueError):
                parseBytes(bad)
