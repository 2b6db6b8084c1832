"""The one placeholder style: C{?} in every statement, rewritten for psycopg2 where needed."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from salvusctl.store.errors import StoreError
from salvusctl.store.sql import checkChannel, countPlaceholders, toPyformat


class ToPyformatTests(SynchronousTestCase):
    def test_placeholders_become_percent_s(self):
        """The one placeholder style, rewritten for psycopg2."""
        self.assertEqual(
            toPyformat("SELECT a FROM t WHERE b = ? AND c = ?"), "SELECT a FROM t WHERE b = %s AND c = %s"
        )

    def test_percent_doubled_everywhere(self):
        """psycopg2 %-formats the whole text, quoted strings included."""
        self.assertEqual(
            toPyformat("SELECT a % 2, '50%' FROM t WHERE b = ?"), "SELECT a %% 2, '50%%' FROM t WHERE b = %s"
        )

    def test_question_marks_in_text_are_not_placeholders(self):
        """A ? in a string, identifier, dollar quote or comment is text."""
        sql = (
            "SELECT 'why?', \"odd?name\", $$ body ? $$, $tag$ x ? $tag$ -- really?\n"
            "/* what? */ FROM t WHERE a = ?"
        )
        self.assertEqual(countPlaceholders(sql), 1)
        self.assertTrue(toPyformat(sql).endswith("WHERE a = %s"))
        self.assertIn("'why?'", toPyformat(sql))
        self.assertIn('"odd?name"', toPyformat(sql))
        self.assertIn("$tag$ x ? $tag$", toPyformat(sql))

    def test_escaped_quotes_stay_inside_the_string(self):
        """A doubled quote does not end the string early."""
        self.assertEqual(toPyformat("SELECT 'it''s ?', ?"), "SELECT 'it''s ?', %s")

    def test_dollar_parameters_and_identifiers_are_not_quotes(self):
        """A $ inside an identifier does not open a dollar quote."""
        self.assertEqual(toPyformat("SELECT a$b, ? FROM t"), "SELECT a$b, %s FROM t")

    def test_unterminated_quote_runs_to_the_end(self):
        """Malformed SQL is left for the server to reject, not rewritten."""
        self.assertEqual(countPlaceholders("SELECT 'open ?"), 0)


class CheckChannelTests(SynchronousTestCase):
    def test_good_names(self):
        """Names PostgreSQL takes as identifiers are accepted as they are."""
        for name in ("a", "salvus_events", "_x1", "A" * 63):
            self.assertEqual(checkChannel(name), name)

    def test_bad_names(self):
        """Anything that would need quoting, or is not text, is refused on both stores."""
        for name in ("", "1a", "has space", "semi;colon", 'q"uote', "A" * 64, None, 3):
            self.assertRaises(StoreError, checkChannel, name)
