"""Engine: the ObjectService every face of tierstore talks to."""

from tierstore.engine._bucket_access import PUBLIC_ACCESS_BLOCK_FLAGS, BucketAccessService
from tierstore.engine._datasets import DatasetRecord, DatasetService, DatasetSpec, MayRead, RowRead
from tierstore.engine._encryption import CUSTOMER_KEY_WRONG, NOT_APPLICABLE, STORED_ENCRYPTED, EncryptionRequest
from tierstore.engine._health import BucketUsage, DriveHealth, StoreHealth
from tierstore.engine._identity import (
    AccessKeyInfo,
    AppliedPolicy,
    IdentityService,
    NewAccessKey,
    Principal,
    UserRecord,
    accept_json_object,
    oidc_url_allowed,
)
from tierstore.engine._lock import (
    DefaultRetention,
    LockConfig,
    LockRequest,
    Retention,
    format_retain_until,
    parse_legal_hold,
    parse_lock_headers,
    parse_mode,
    parse_retain_until,
)
from tierstore.engine._models import ModelService
from tierstore.engine._oidc import OidcVerifier, WebIdentity, provider_key
from tierstore.engine._repair import HealProgress, Repairer, stream_progress
from tierstore.engine._rewrap import RewrapPage, rewrap_page
from tierstore.engine._service import (
    DEFAULT_INLINE_MAX_BYTES,
    CompletedPart,
    CopyOptions,
    CopyResult,
    GetResult,
    ObjectService,
)
from tierstore.engine._sts import ACCOUNT, RoleState, Session, StsService, role_name_of
from tierstore.engine._tags import parse_tagging_header
from tierstore.engine._tiers import (
    LOCAL_CLASS,
    NoSuchTier,
    TierAlreadyExists,
    TierConfig,
    TierInfo,
    TierInUse,
    TierService,
    TierSpec,
    TierStatus,
    check_tier_name,
)

__all__ = [
    "ACCOUNT",
    "CUSTOMER_KEY_WRONG",
    "DEFAULT_INLINE_MAX_BYTES",
    "LOCAL_CLASS",
    "NOT_APPLICABLE",
    "PUBLIC_ACCESS_BLOCK_FLAGS",
    "STORED_ENCRYPTED",
    "AccessKeyInfo",
    "AppliedPolicy",
    "BucketAccessService",
    "BucketUsage",
    "CompletedPart",
    "CopyOptions",
    "CopyResult",
    "DatasetRecord",
    "DatasetService",
    "DatasetSpec",
    "DefaultRetention",
    "DriveHealth",
    "EncryptionRequest",
    "GetResult",
    "HealProgress",
    "IdentityService",
    "LockConfig",
    "LockRequest",
    "MayRead",
    "ModelService",
    "NewAccessKey",
    "NoSuchTier",
    "ObjectService",
    "OidcVerifier",
    "Principal",
    "Repairer",
    "Retention",
    "RewrapPage",
    "RoleState",
    "RowRead",
    "Session",
    "StoreHealth",
    "StsService",
    "TierAlreadyExists",
    "TierConfig",
    "TierInUse",
    "TierInfo",
    "TierService",
    "TierSpec",
    "TierStatus",
    "UserRecord",
    "WebIdentity",
    "accept_json_object",
    "check_tier_name",
    "format_retain_until",
    "oidc_url_allowed",
    "parse_legal_hold",
    "parse_lock_headers",
    "parse_mode",
    "parse_retain_until",
    "parse_tagging_header",
    "provider_key",
    "rewrap_page",
    "role_name_of",
    "stream_progress",
]
