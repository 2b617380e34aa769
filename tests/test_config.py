"""
Configuration: a good file, every kind of bad file, unknown keys, secrets.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from masterd.config import DSN_ENV, ConfigError, Role, loadConfig, parseConfig

ROOT = Path(__file__).resolve().parent.parent


def good() -> dict[str, object]:
    return {
        "master": {"name": "m1"},
        "http": {"listen": ["tcp:0:interface=127.0.0.1"]},
        "database": {"dsn": "host=/tmp dbname=masterd"},
        "auth": {"tokens": [{"name": "ops", "role": "operator", "token": "x" * 20}]},
    }


class ConfigTests(SynchronousTestCase):
    def problems(self, raw: object, environ: dict[str, str] | None = None) -> list[str]:
        with self.assertRaises(ConfigError) as caught:
            parseConfig(raw, source="m.yaml", environ=environ or {})
        return caught.exception.lines

    def test_shippedExample(self) -> None:
        """
        etc/master.yaml is valid: embedded database, loopback, dev tokens.
        """
        config = loadConfig(ROOT / "etc" / "master.yaml", environ={})
        self.assertEqual(config.http.listen, ("tcp:8080:interface=127.0.0.1:backlog=1024",))
        self.assertIsNone(config.database.dsn)
        self.assertEqual(config.database.embedded_data_dir, (ROOT / "var" / "pgdata"))
        self.assertEqual({t.role for t in config.tokens}, {Role.admin, Role.agent})

    def test_shippedClusterExample(self) -> None:
        env = {f"MASTERD_{k}_TOKEN": k.lower() * 20 for k in ("OPS", "ADMIN", "AGENT")}
        config = loadConfig(ROOT / "etc" / "cluster-master.yaml", environ=env)
        self.assertEqual(config.master.name, "master-1")
        self.assertEqual(len(config.tokens), 3)
        with self.assertRaises(ConfigError):
            loadConfig(ROOT / "etc" / "cluster-master.yaml", environ={})

    def test_defaults(self) -> None:
        config = parseConfig({"database": {"dsn": "dbname=x"}}, environ={})
        self.assertTrue(config.master.name)
        self.assertEqual(config.http.listen, ("tcp:8080:interface=127.0.0.1:backlog=1024",))
        self.assertEqual(config.http.public_metrics, False)
        self.assertEqual(config.http.access_log, True)
        self.assertEqual((config.database.pool.min, config.database.pool.max), (2, 10))
        self.assertEqual(config.limits.max_body_bytes, 1024 * 1024)
        self.assertEqual(config.limits.max_log_lines_per_attempt, 1_000_000)
        self.assertEqual(config.tokens, ())

    def test_good(self) -> None:
        config = parseConfig(good(), environ={})
        self.assertEqual(config.master.name, "m1")
        [token] = config.tokens
        self.assertEqual(token.name, "ops")
        self.assertEqual(token.role, Role.operator)
        self.assertEqual(token.sha256, hashlib.sha256(b"x" * 20).digest())

    def test_relativeDataDir(self) -> None:
        """
        A relative data_dir is relative to the config file, not the cwd.
        """
        path = Path(self.mktemp())
        path.mkdir()
        (path / "m.yaml").write_text("database:\n  embedded:\n    data_dir: db\n")
        config = loadConfig(path / "m.yaml", environ={})
        self.assertEqual(config.database.embedded_data_dir, path.resolve() / "db")

    def test_unknownKeys(self) -> None:
        raw = good()
        raw["htpp"] = {}
        raw["database"] = {"dsn": "dbname=x", "pool": {"mx": 3}}
        self.assertEqual(
            self.problems(raw),
            [
                "m.yaml: database.pool.mx: is not a known key",
                "m.yaml: htpp: is not a known key",
            ],
        )

    def test_wrongTypes(self) -> None:
        raw = good()
        raw["http"] = {"listen": "tcp:8080", "public_metrics": "yes"}
        raw["limits"] = {"max_body_bytes": "1MB", "max_log_lines_per_attempt": 10}
        self.assertEqual(
            self.problems(raw),
            [
                "m.yaml: http.listen: must be a list, not a string",
                "m.yaml: http.public_metrics: must be true or false, not a string",
                "m.yaml: limits.max_body_bytes: must be an integer, not a string",
                "m.yaml: limits.max_log_lines_per_attempt: must be at least 100, not 10",
            ],
        )

    def test_numbersFinite(self) -> None:
        """
        NaN and infinities (YAML's .nan, .inf) are refused, naming the key:
        a NaN passes every comparison with a bound.
        """
        raw = good()
        raw["retention"] = {"duty": float("nan"), "interval_s": float("inf"), "jobs_days": 3}
        self.assertEqual(
            self.problems(raw),
            [
                "m.yaml: retention.interval_s: must be a finite number, not inf",
                "m.yaml: retention.duty: must be a finite number, not nan",
            ],
        )
        raw["retention"] = {"duty": 0}
        self.assertEqual(
            self.problems(raw), ["m.yaml: retention.duty: must be at least 0.05, not 0"]
        )
        raw["retention"] = {"history_days": 1e300}
        [line] = self.problems(raw)
        self.assertEqual(line, "m.yaml: retention.history_days: must be at most 36500, not 1e+300")

    def test_badEndpoint(self) -> None:
        raw = good()
        raw["http"] = {"listen": ["tcp:notaport", 7]}
        lines = self.problems(raw)
        self.assertEqual(len(lines), 2)
        self.assertTrue(lines[0].startswith("m.yaml: http.listen[0]: is not a valid endpoint"))
        self.assertEqual(
            lines[1], "m.yaml: http.listen[1]: must be a Twisted server endpoint string"
        )

    def test_databaseExactlyOne(self) -> None:
        raw = good()
        raw["database"] = {}
        [line] = self.problems(raw)
        self.assertIn("m.yaml: database: needs exactly one of", line)
        self.assertIn("neither is given", line)
        raw["database"] = {"dsn": "dbname=x", "embedded": {"data_dir": "db"}}
        [line] = self.problems(raw)
        self.assertIn("both are given", line)

    def test_poolBounds(self) -> None:
        raw = good()
        raw["database"] = {"dsn": "dbname=x", "pool": {"min": 5, "max": 2}}
        self.assertEqual(
            self.problems(raw), ["m.yaml: database.pool.max: must be at least pool.min (5), not 2"]
        )
        raw["database"] = {"dsn": "dbname=x", "pool": {"min": 0}}
        self.assertEqual(
            self.problems(raw), ["m.yaml: database.pool.min: must be at least 1, not 0"]
        )

    def test_dsnFromEnvironment(self) -> None:
        raw = good()
        raw["database"] = {}
        config = parseConfig(raw, environ={DSN_ENV: "dbname=fromenv"})
        self.assertEqual(config.database.dsn, "dbname=fromenv")

    def test_tokenProblems(self) -> None:
        raw = good()
        raw["auth"] = {
            "tokens": [
                {"name": "a", "role": "king", "token": "y" * 20},
                {"name": "b", "role": "viewer"},
                {"name": "c", "role": "viewer", "token": "short"},
                {"name": "d", "role": "viewer", "token_sha256": "abc"},
                {"name": "a", "role": "viewer", "token": "z" * 20, "extra": 1},
            ]
        }
        self.assertEqual(
            self.problems(raw),
            [
                "m.yaml: auth.tokens[0].role: must be one of viewer, user, operator, admin,"
                " agent, not 'king'",
                "m.yaml: auth.tokens[1]: needs exactly one of token, token_sha256 and token_env",
                "m.yaml: auth.tokens[2].token: must be at least 16 characters long",
                "m.yaml: auth.tokens[3].token_sha256: must be 64 hexadecimal digits",
                "m.yaml: auth.tokens[4].extra: is not a known key",
            ],
        )

    def test_missingSecret(self) -> None:
        """
        A token_env naming an unset variable is an error, not an empty token.
        """
        raw = good()
        raw["auth"] = {"tokens": [{"name": "a", "role": "agent", "token_env": "FARM_TOKEN"}]}
        self.assertEqual(
            self.problems(raw),
            ["m.yaml: auth.tokens[0].token_env: environment variable FARM_TOKEN is not set"],
        )
        config = parseConfig(raw, environ={"FARM_TOKEN": "s" * 32})
        self.assertEqual(config.tokens[0].sha256, hashlib.sha256(b"s" * 32).digest())

    def test_tokenSha256(self) -> None:
        digest = hashlib.sha256(b"q" * 20).hexdigest()
        raw = good()
        raw["auth"] = {"tokens": [{"name": "a", "role": "admin", "token_sha256": digest}]}
        self.assertEqual(parseConfig(raw, environ={}).tokens[0].sha256.hex(), digest)

    def test_duplicateTokens(self) -> None:
        raw = good()
        raw["auth"] = {
            "tokens": [
                {"name": "a", "role": "admin", "token": "w" * 20},
                {"name": "b", "role": "viewer", "token": "w" * 20},
            ]
        }
        self.assertEqual(
            self.problems(raw), ["m.yaml: auth.tokens[1]: has the same token as another entry"]
        )

    def test_notAMapping(self) -> None:
        self.assertEqual(
            self.problems(["a"]), ["m.yaml: (top level): must be a mapping, not a list"]
        )
        self.assertEqual(
            self.problems({"database": {"dsn": "x"}, "master": "m1"}),
            ["m.yaml: master: must be a mapping, not a string"],
        )

    def test_badMasterName(self) -> None:
        raw = good()
        raw["master"] = {"name": "has spaces"}
        [line] = self.problems(raw)
        self.assertTrue(line.startswith("m.yaml: master.name: must be 1-63 letters"))

    def test_talkback(self) -> None:
        config = parseConfig({"database": {"dsn": "x"}}, environ={})
        t = config.talkback
        self.assertEqual((t.heartbeat_s, t.agent_timeout_s, t.lost_grace_s), (10, 45, 45))
        raw = {"database": {"dsn": "x"}, "talkback": {"agent_timeout_s": 90}}
        self.assertEqual(parseConfig(raw, environ={}).talkback.lost_grace_s, 90)
        raw["talkback"] = {"heartbeat_s": 30, "agent_timeout_s": 20, "max_message_bytes": 10}
        self.assertEqual(
            self.problems(raw),
            [
                "m.yaml: talkback.agent_timeout_s: must be longer than talkback.heartbeat_s"
                " (30), not 20",
                "m.yaml: talkback.max_message_bytes: must be at least 1024, not 10",
            ],
        )

    def test_unreadableAndInvalidYAML(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            loadConfig("/nonexistent/m.yaml")
        self.assertEqual(
            caught.exception.lines, ["/nonexistent/m.yaml: cannot read: No such file or directory"]
        )
        path = Path(self.mktemp())
        path.write_text("master: [unclosed\n")
        with self.assertRaises(ConfigError) as caught:
            loadConfig(path)
        [line] = caught.exception.lines
        self.assertTrue(line.startswith(f"{path}: line 2, column 1: "), line)
