"""ACLs: what kmc needs on each cluster, whether it has it, and copying topic ACLs along with a mirror.

- :mod:`kmc.acls.model`: a :class:`Permission` (one operation on one resource), a command's :class:`Need`,
  the :class:`Verdict` a check gives it, an :class:`AclBinding`; Kafka's implied operations.
- :mod:`kmc.acls.check`: :func:`mirror_needs`, :func:`diff_needs`, :func:`translation_needs` (``groups
  translate``, ``--sync-groups``) and :func:`status_needs` (the README's least-privilege table is this, in
  prose), :func:`check_permissions` (changes nothing), :func:`explain_denials` (a broker's "not authorized"
  becomes one line naming the missing operation and resource), :func:`check_mirror` for
  ``kmc mirror --dry-run``.
- :mod:`kmc.acls.sync`: ``--sync-acls`` (:func:`acls_to_sync`, :func:`apply_acl_sync`) and ``kmc diff --acls``
  (:func:`acl_differences`), with MirrorMaker 2's rules.

Library code: no printing.
"""

from kmc.acls.check import (
    check_mirror,
    check_permissions,
    diff_needs,
    explain_denials,
    explain_mirror_denials,
    explain_status_denials,
    explain_translation_denials,
    group_selection,
    hidden_topics,
    literal_topic_names,
    mirror_needs,
    missing_line,
    permission_failure,
    raise_for_hidden_groups,
    raise_for_hidden_topics,
    regex_prefix,
    status_needs,
    translation_needs,
)
from kmc.acls.model import (
    AclBinding,
    Need,
    Permission,
    Verdict,
    describe_acls,
    grant_command,
    grants,
    principal_of,
)
from kmc.acls.sync import (
    AclDifference,
    AclSync,
    acl_differences,
    acls_to_sync,
    apply_acl_sync,
    expected_target_acls,
    mirrored_acl,
    topic_acls,
)

__all__ = [
    "AclBinding",
    "AclDifference",
    "AclSync",
    "Need",
    "Permission",
    "Verdict",
    "acl_differences",
    "acls_to_sync",
    "apply_acl_sync",
    "check_mirror",
    "check_permissions",
    "describe_acls",
    "diff_needs",
    "expected_target_acls",
    "explain_denials",
    "explain_mirror_denials",
    "explain_status_denials",
    "explain_translation_denials",
    "grant_command",
    "grants",
    "group_selection",
    "hidden_topics",
    "literal_topic_names",
    "mirror_needs",
    "mirrored_acl",
    "missing_line",
    "permission_failure",
    "principal_of",
    "raise_for_hidden_groups",
    "raise_for_hidden_topics",
    "regex_prefix",
    "status_needs",
    "topic_acls",
    "translation_needs",
]
