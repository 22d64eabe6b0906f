"""One exception tree for kmc: each error carries its exit code and a one-line hint.

The library raises these; only the CLI turns them into a stderr line and an exit status.
"""

from __future__ import annotations

import re
from enum import IntEnum


class ExitCode(IntEnum):
    """Exit statuses; the table in docs/exit-codes.md and the README is generated from this."""

    OK = 0
    DIFFERENCES = 1  # diff found differences, or a lag alarm (flow/mirror status --max-lag): never a failure
    USAGE = 2  # bad option, unknown cluster or flow name, bad regex
    CONFIG = 3  # unreadable or invalid config file, missing environment variable, missing tool, unwritable files
    UNREACHABLE = 4  # a cluster could not be reached in time
    AUTH = 5  # authentication or authorization failed
    PARTIAL = 6  # some clusters, topics or partitions failed, the rest succeeded
    DATA_GAP = 7  # records expired or a topic was recreated before they were copied
    FAILED = 8  # an operation failed: a broker refused it for a reason none of the above, or an internal error
    ARCHIVE = 9  # an export (kmc export's files) is damaged, truncated, fails its checksum or has an unknown format
    LOCKED = 75  # another run of the same flow holds its lock (EX_TEMPFAIL)
    INTERRUPTED = 130  # Ctrl-C (SIGINT)
    TERMINATED = 143  # SIGTERM, for commands that do not stop cleanly on it (mirror, aggregate, flow run do: 0)


EXIT_CODE_MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "success; for diff, no differences",
    ExitCode.DIFFERENCES: "differences found (diff); a lag alarm: a partition further behind than --max-lag or "
                          "--max-lag-seconds (flow status, mirror status)",
    ExitCode.USAGE: "usage error: bad option, unknown cluster or flow name, bad regex",
    ExitCode.CONFIG: "configuration error: invalid config file, missing environment variable, missing java/mvn, "
                     "a file or directory kmc needs that cannot be written (config, state, stdout)",
    ExitCode.UNREACHABLE: "a cluster could not be reached in time",
    ExitCode.AUTH: "authentication or authorization failed",
    ExitCode.PARTIAL: "partial failure: some clusters, topics or partitions failed, the rest succeeded",
    ExitCode.DATA_GAP: "data gap: records expired or a topic was recreated before they were copied "
                       "(the rest was copied; the gaps are listed)",
    ExitCode.FAILED: "an operation failed: a broker refused it for another reason (e.g. a record too large for "
                     "the target), a read failed, or an internal error",
    ExitCode.ARCHIVE: "an export is damaged, truncated, fails its checksum or has an unknown format version "
                      "(kmc import, diff: nothing past the damage was imported)",
    ExitCode.LOCKED: "another run of the same flow holds its lock (cron overlap)",
    ExitCode.INTERRUPTED: "interrupted by Ctrl-C; progress up to the interruption is checkpointed",
    ExitCode.TERMINATED: "stopped by SIGTERM (mirror, aggregate and flow run stop cleanly on it instead: exit 0)",
}


class KmcError(Exception):
    """Base of every error kmc reports to the user.

    ``message`` says what went wrong, ``hint`` what to do about it; both fit on one line.
    """

    exit_code: ExitCode = ExitCode.FAILED
    default_hint: str = ""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = self.default_hint if hint is None else hint

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        # pickled as class, message and hint (the default would lose the hint): errors cross from child
        # processes to their parent (kmc.worker)
        return type(self), (self.message, self.hint)

    def one_line(self) -> str:
        text = self.message.rstrip(".")
        if self.hint:
            text += f" ({self.hint})"
        return " ".join(text.split())


class UsageError(KmcError):
    exit_code = ExitCode.USAGE
    default_hint = "see --help"


class UnknownClusterError(UsageError):
    # every command that takes a cluster name also takes host:port in its place
    default_hint = "name a cluster of 'kmc profile list', or give its address as host:port"


class ConfigError(KmcError):
    exit_code = ExitCode.CONFIG
    default_hint = "fix the config file, or see 'kmc profile --help'"


class MissingToolError(ConfigError):
    default_hint = ""


class OutputError(ConfigError):
    """stdout cannot be written (closed, or on a full disk): the data would be lost."""

    default_hint = "check where stdout goes"


class UnreachableError(KmcError):
    exit_code = ExitCode.UNREACHABLE
    default_hint = "check the bootstrap address and that the brokers are up, or raise --timeout"


class AuthError(KmcError):
    exit_code = ExitCode.AUTH
    default_hint = "check the username, password and security settings of the profile"


class AuthorizationError(AuthError):
    default_hint = "ask the cluster's operator for the ACL named above"


class TlsError(AuthError):
    """A TLS connection that cannot work: an untrusted or wrong-host certificate, TLS spoken to a plaintext
    port or the other way round, a client certificate missing or refused. Exit 5, like any failure to
    establish who is who."""

    default_hint = "check security_protocol, ssl_cafile and the client certificate of the profile"


class PartialFailure(KmcError):
    exit_code = ExitCode.PARTIAL
    default_hint = "the other clusters, topics or partitions succeeded; see the errors above"


class LagAlarm(KmcError):
    """``kmc flow status`` / ``kmc mirror status`` with --max-lag or --max-lag-seconds: a partition is further
    behind (the offenders are on stderr). Exit 1, like diff's differences: what was asked for was answered."""

    exit_code = ExitCode.DIFFERENCES
    default_hint = "the partitions are listed above"


class DataGapError(KmcError):
    """A mirror copied everything it could, but some records were gone before they could be copied."""

    exit_code = ExitCode.DATA_GAP
    default_hint = "the gaps are listed above and in the JSON result (gaps); see docs/mirror.md, data gaps"


class LockedError(KmcError):
    exit_code = ExitCode.LOCKED
    default_hint = "another run holds the lock; this run changed nothing"


class Interrupted(KmcError):
    exit_code = ExitCode.INTERRUPTED
    default_hint = ""


class Cancelled(Interrupted):
    """A connection abandoned because the run was asked to stop (SIGINT or SIGTERM) while it was made."""


class Terminated(BaseException):  # noqa: N818 - named like KeyboardInterrupt, its SIGINT twin
    """Raised in the main thread by kmc's SIGTERM handler, as KeyboardInterrupt is for SIGINT: not an
    Exception, so no ``except Exception`` on the way out stops it."""


class KafkaOperationError(KmcError):
    """A broker answered with an error that is none of the kinds above."""

    exit_code = ExitCode.FAILED
    default_hint = "run again with --debug for details"


class FencedError(KafkaOperationError):
    """Another writer with the same transactional id took over (Kafka fenced this one): for a ``--group``
    member, its partitions went to another member while it was away; it rejoins the group."""


def describe_exception(exc: BaseException) -> str:
    """``Name: message`` of any exception (a kafka-python one, usually), on one line, once: kafka-python
    repeats itself ("[Error 58] SaslAuthenticationFailedError: SaslAuthenticationFailedError: ...")."""
    name = type(exc).__name__
    text = re.sub(r"^\[Error -?\d+\]\s*", "", str(exc).strip())
    while text.startswith(f"{name}: ") or text == name:
        text = text[len(name) + 2:]
    return f"{name}: {text}" if text else name


def combined_failure(errors: list[KmcError], succeeded: int) -> KmcError | None:
    """The error to exit with when several clusters (or topics) were worked on independently.

    None when nothing failed; PartialFailure when some succeeded; otherwise the first failure,
    so that one unreachable cluster still exits 4 and one bad password 5.
    """
    if not errors:
        return None
    if succeeded:
        return PartialFailure(f"{len(errors)} of {len(errors) + succeeded} failed")
    return errors[0]
