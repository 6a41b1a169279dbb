"""``tierstore admin group|role ...``, the managed policies of ``tierstore admin policy ...`` and
``tierstore whoami``: thin faces over the server's IAM and STS query APIs (``client.make_iam_client``,
``client.make_sts_client``: the APIs boto3 and ``aws iam``/``aws sts`` use), so they need exactly
the permissions the same calls need (docs/identities.md). Answers are JSON on stdout (``whoami``:
lines, JSON with ``--json``); expected failures one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from tierstore.cli._client import _connection_options
from tierstore.cli._duration import duration_arg
from tierstore.client import IamClient, StsClient, make_iam_client, make_sts_client, resolve_settings

__all__ = ["add_iam_commands", "add_managed_policy_commands", "add_whoami_command"]

ACCOUNT = "000000000000"


def add_iam_commands(asub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``admin group ...`` and ``admin role ...``."""
    conn = _connection_options()
    group = asub.add_parser("group", help="groups: create, ls, rm, add, remove, policy")
    gsub = group.add_subparsers(dest="group_command", required=True)
    _verb(gsub, conn, "create", "create a group", _group_create, "name")
    _verb(gsub, conn, "ls", "list groups (with USER: the user's groups)", _group_ls, "user?")
    _verb(gsub, conn, "rm", "delete a group (no members or policies left)", _group_rm, "name")
    _verb(gsub, conn, "add", "add a user to a group", _group_add, "group", "user")
    _verb(gsub, conn, "remove", "remove a user from a group", _group_remove, "group", "user")
    _verb(gsub, conn, "info", "a group and its members", _group_info, "name")
    _policy_commands(gsub, conn, "group")
    role = asub.add_parser("role", help="roles: create, ls, rm, policy")
    rsub = role.add_subparsers(dest="role_command", required=True)
    p = _verb(rsub, conn, "create", "create a role with a trust policy (JSON file)", _role_create, "name", "trust")
    p.add_argument("--max-session", metavar="DURATION", type=duration_arg, help="longest session (15m to 12h)")
    p.add_argument("--description", default="")
    _verb(rsub, conn, "ls", "list roles", _role_ls)
    _verb(rsub, conn, "info", "a role, its trust policy and its policies", _role_info, "name")
    _verb(rsub, conn, "rm", "delete a role (no policies left)", _role_rm, "name")
    _policy_commands(rsub, conn, "role")


def add_managed_policy_commands(
    psub: argparse._SubParsersAction[argparse.ArgumentParser], conn: argparse.ArgumentParser
) -> None:
    """``admin policy create|managed|info|delete|attach|detach``: managed policies (one document,
    attached to any number of users, groups and roles), beside the user-inline verbs of
    ``cli/_admin.py``. A policy is named by its name or its ARN."""
    named = "the policy's name (or ARN)"
    p = _verb(psub, conn, "create", "create a managed policy from a JSON file", _managed_create)
    p.add_argument("name", help="the policy's name")
    p.add_argument("file", help="the policy document (JSON, IAM policy language)")
    p.add_argument("--description", default="", help="a line saying what the policy is for")
    _verb(psub, conn, "managed", "list the managed policies", _managed_ls)
    p = _verb(psub, conn, "info", "a managed policy, its document and who it is attached to", _managed_info)
    p.add_argument("name", help=named)
    p = _verb(psub, conn, "delete", "delete a managed policy (detach it from everyone first)", _managed_delete)
    p.add_argument("name", help=named)
    for verb, attach in (("attach", True), ("detach", False)):
        helptext = f"{verb} a managed policy {'to' if attach else 'from'} a user, a group or a role"
        p = _verb(psub, conn, verb, helptext, _attach_to(attach))
        p.add_argument("policy", help=named)
        target = p.add_mutually_exclusive_group(required=True)
        for kind in ("user", "group", "role"):
            target.add_argument(f"--{kind}", metavar=kind.upper(), help=f"the {kind}")


def add_whoami_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "whoami",
        parents=[_connection_options()],
        help="who the configured credentials act as (root, user or role session; ARN, account, user id)",
        description="Ask the server who the configured credentials act as (STS GetCallerIdentity, which "
        "needs no permission, as on AWS). Without --access-key or $TIERSTORE_ACCESS_KEY the AWS chain "
        "is used, so temporary credentials work from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and "
        "AWS_SESSION_TOKEN.",
    )
    p.add_argument("--json", action="store_true", help="print the answer as JSON")
    p.set_defaults(func=_run(_whoami, make_sts_client, _print_whoami), command="whoami")


def _verb(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    conn: argparse.ArgumentParser,
    verb: str,
    helptext: str,
    fn: Callable[[IamClient, argparse.Namespace], Any],
    *positional: str,
) -> argparse.ArgumentParser:
    p = sub.add_parser(verb, parents=[conn], help=helptext)
    for name in positional:
        if name.endswith("?"):
            p.add_argument(name[:-1], nargs="?")
        else:
            p.add_argument(name)
    p.set_defaults(func=_run(fn))
    return p


def _policy_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], conn: argparse.ArgumentParser, kind: str
) -> None:
    """``admin group|role policy put|rm|ls|attach|detach``: inline and managed policies."""
    policy = sub.add_parser("policy", help=f"a {kind}'s policies: put, rm, ls (inline); attach, detach (managed)")
    psub = policy.add_subparsers(dest=f"{kind}_policy_command", required=True)
    _verb(psub, conn, "put", f"set a {kind}'s inline policy from a JSON file", _policy_put(kind), kind, "name", "file")
    _verb(psub, conn, "rm", f"delete a {kind}'s inline policy", _policy_rm(kind), kind, "name")
    _verb(psub, conn, "ls", f"a {kind}'s inline and attached policies", _policy_ls(kind), kind)
    attach_help = f"attach a managed policy (name or ARN) to a {kind}"
    _verb(psub, conn, "attach", attach_help, _attach(kind, True), kind, "policy")
    _verb(psub, conn, "detach", f"detach a managed policy from a {kind}", _attach(kind, False), kind, "policy")


def _run(
    fn: Callable[[IamClient, argparse.Namespace], Any],
    make: Callable[..., Any] = make_iam_client,
    show: Callable[[Any], None] | None = None,
) -> Callable[[argparse.Namespace], int]:
    """The command ``fn`` over a client from ``make`` (IAM, or STS); its answer as JSON, or through
    ``show`` unless ``--json`` is given."""

    def run(args: argparse.Namespace) -> int:
        from botocore.exceptions import BotoCoreError, ClientError

        name = "tierstore " + " ".join(_command_words(args))
        try:
            settings = resolve_settings(
                args.endpoint, access_key=args.access_key, secret_key=args.secret_key, region=args.region
            )
            doc = fn(make(settings, max_attempts=1), args)
        except ClientError as exc:
            err = exc.response.get("Error", {})
            print(f"{name}: {err.get('Code', 'Error')}: {err.get('Message', '')}", file=sys.stderr)
            return 2
        except (BotoCoreError, ValueError, OSError) as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            return 2
        if show is not None and not getattr(args, "json", False):
            show(doc)
        else:
            print(json.dumps(doc, indent=1, default=str))
        return 0

    return run


def _command_words(args: argparse.Namespace) -> list[str]:
    """``admin group policy put`` & co., from the parsed subcommand names."""
    out = [args.command]
    for attr in (
        "admin_command", "group_command", "role_command", "policy_command",
        "group_policy_command", "role_policy_command",
    ):  # fmt: skip
        value = getattr(args, attr, None)
        if value:
            out.append(value)
    return out


def _policy_arn(policy: str) -> str:
    return policy if policy.startswith("arn:") else f"arn:aws:iam::{ACCOUNT}:policy/{policy}"


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


# --- groups -------------------------------------------------------------------------------------
def _group_create(iam: IamClient, args: argparse.Namespace) -> Any:
    return iam.create_group(GroupName=args.name)["Group"]


def _group_ls(iam: IamClient, args: argparse.Namespace) -> Any:
    if args.user:
        pages = iam.get_paginator("list_groups_for_user").paginate(UserName=args.user)
    else:
        pages = iam.get_paginator("list_groups").paginate()
    return [g["GroupName"] for page in pages for g in page["Groups"]]


def _group_info(iam: IamClient, args: argparse.Namespace) -> Any:
    got = iam.get_group(GroupName=args.name)
    return {**got["Group"], "Users": [u["UserName"] for u in got["Users"]]}


def _group_rm(iam: IamClient, args: argparse.Namespace) -> Any:
    iam.delete_group(GroupName=args.name)
    return {"deleted": args.name}


def _group_add(iam: IamClient, args: argparse.Namespace) -> Any:
    iam.add_user_to_group(GroupName=args.group, UserName=args.user)
    return {"group": args.group, "added": args.user}


def _group_remove(iam: IamClient, args: argparse.Namespace) -> Any:
    iam.remove_user_from_group(GroupName=args.group, UserName=args.user)
    return {"group": args.group, "removed": args.user}


# --- roles --------------------------------------------------------------------------------------
def _role_create(iam: IamClient, args: argparse.Namespace) -> Any:
    extra: dict[str, Any] = {"Description": args.description}
    if args.max_session is not None:
        extra["MaxSessionDuration"] = int(args.max_session)
    return iam.create_role(RoleName=args.name, AssumeRolePolicyDocument=_read(args.trust), **extra)["Role"]


def _role_ls(iam: IamClient, args: argparse.Namespace) -> Any:
    return [r["RoleName"] for page in iam.get_paginator("list_roles").paginate() for r in page["Roles"]]


def _role_info(iam: IamClient, args: argparse.Namespace) -> Any:
    return iam.get_role(RoleName=args.name)["Role"]


def _role_rm(iam: IamClient, args: argparse.Namespace) -> Any:
    iam.delete_role(RoleName=args.name)
    return {"deleted": args.name}


# --- policies of groups and roles -----------------------------------------------------------------
def _policy_put(kind: str) -> Callable[[IamClient, argparse.Namespace], Any]:
    def put(iam: IamClient, args: argparse.Namespace) -> Any:
        target = getattr(args, kind)
        document = _read(args.file)
        getattr(iam, f"put_{kind}_policy")(
            **{f"{kind.capitalize()}Name": target}, PolicyName=args.name, PolicyDocument=document
        )
        return {kind: target, "policy": args.name, "document": json.loads(document)}

    return put


def _policy_rm(kind: str) -> Callable[[IamClient, argparse.Namespace], Any]:
    def rm(iam: IamClient, args: argparse.Namespace) -> Any:
        getattr(iam, f"delete_{kind}_policy")(**{f"{kind.capitalize()}Name": getattr(args, kind)}, PolicyName=args.name)
        return {"deleted": args.name}

    return rm


def _policy_ls(kind: str) -> Callable[[IamClient, argparse.Namespace], Any]:
    def ls(iam: IamClient, args: argparse.Namespace) -> Any:
        named = {f"{kind.capitalize()}Name": getattr(args, kind)}
        inline = getattr(iam, f"list_{kind}_policies")(**named)["PolicyNames"]
        attached = getattr(iam, f"list_attached_{kind}_policies")(**named)["AttachedPolicies"]
        return {"inline": inline, "attached": [p["PolicyArn"] for p in attached]}

    return ls


def _attach(kind: str, attach: bool) -> Callable[[IamClient, argparse.Namespace], Any]:
    def run(iam: IamClient, args: argparse.Namespace) -> Any:
        verb = "attach" if attach else "detach"
        arn = _policy_arn(args.policy)
        getattr(iam, f"{verb}_{kind}_policy")(**{f"{kind.capitalize()}Name": getattr(args, kind)}, PolicyArn=arn)
        return {kind: getattr(args, kind), f"{verb}ed": arn}

    return run


# --- managed policies ---------------------------------------------------------------------------
def _managed_create(iam: IamClient, args: argparse.Namespace) -> Any:
    return iam.create_policy(PolicyName=args.name, PolicyDocument=_read(args.file), Description=args.description)[
        "Policy"
    ]


def _managed_ls(iam: IamClient, args: argparse.Namespace) -> Any:
    pages = iam.get_paginator("list_policies").paginate(Scope="Local")
    return [p["PolicyName"] for page in pages for p in page["Policies"]]


def _managed_info(iam: IamClient, args: argparse.Namespace) -> Any:
    arn = _policy_arn(args.name)
    policy = iam.get_policy(PolicyArn=arn)["Policy"]
    version = iam.get_policy_version(PolicyArn=arn, VersionId=policy["DefaultVersionId"])["PolicyVersion"]
    entities = iam.list_entities_for_policy(PolicyArn=arn)
    return {
        **policy,
        "Document": version["Document"],
        "Users": [u["UserName"] for u in entities["PolicyUsers"]],
        "Groups": [g["GroupName"] for g in entities["PolicyGroups"]],
        "Roles": [r["RoleName"] for r in entities["PolicyRoles"]],
    }


def _managed_delete(iam: IamClient, args: argparse.Namespace) -> Any:
    arn = _policy_arn(args.name)
    iam.delete_policy(PolicyArn=arn)
    return {"deleted": arn}


def _attach_to(attach: bool) -> Callable[[IamClient, argparse.Namespace], Any]:
    """``admin policy attach|detach POLICY --user U | --group G | --role R``."""

    def run(iam: IamClient, args: argparse.Namespace) -> Any:
        kind = next(k for k in ("user", "group", "role") if getattr(args, k) is not None)
        return _attach(kind, attach)(iam, args)

    return run


# --- whoami -------------------------------------------------------------------------------------
def _whoami(sts: StsClient, args: argparse.Namespace) -> Any:
    """GetCallerIdentity, and what its ARN says: ``root``, ``user/NAME`` (a user's key, service
    account or GetSessionToken session) or ``assumed-role/ROLE/SESSION``."""
    found = sts.get_caller_identity()
    arn: str = found["Arn"]
    resource = arn.split(":", 5)[-1]
    who: dict[str, str] = {"type": "root"} if resource == "root" else {"type": "unknown"}
    if resource.startswith("user/"):
        who = {"type": "user", "user": resource.removeprefix("user/")}
    elif resource.startswith("assumed-role/"):
        role, _, session = resource.removeprefix("assumed-role/").partition("/")
        who = {"type": "role-session", "role": role, "session": session}
    return {**who, "arn": arn, "account": found["Account"], "user_id": found["UserId"]}


def _print_whoami(doc: dict[str, str]) -> None:
    for name, value in doc.items():
        label = name.replace("_", " ") + ":"
        print(f"{label:<9} {value.replace('-', ' ') if name == 'type' else value}")
