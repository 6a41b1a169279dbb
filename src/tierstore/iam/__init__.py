"""Identity and access: the AWS IAM policy language and its evaluation, as pure functions.

``parse_policy`` validates a policy document (``MalformedPolicy`` names the statement and the
field) and compiles it once; ``evaluate`` answers one ``AuthzRequest`` with a ``Decision``
(allowed, reason, and which policy statement decided). No I/O here: callers load the policies
(catalog) and build the request context (api dispatcher). See docs/security.md.
"""

from __future__ import annotations

from tierstore.iam._evaluate import (
    AuthzRequest,
    Decision,
    PolicySet,
    Principal,
    compile_policies,
    evaluate,
    key_independent,
    s3_resource_arn,
    trust_admits,
)
from tierstore.iam._policy import MAX_POLICY_CHARS, SERVICES, Policy, PolicyKind, PrincipalSpec, Statement, parse_policy

__all__ = [
    "MAX_POLICY_CHARS",
    "SERVICES",
    "AuthzRequest",
    "Decision",
    "Policy",
    "PolicyKind",
    "PolicySet",
    "Principal",
    "PrincipalSpec",
    "Statement",
    "compile_policies",
    "evaluate",
    "key_independent",
    "parse_policy",
    "s3_resource_arn",
    "trust_admits",
]
