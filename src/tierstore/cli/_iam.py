"""``tierstore admin group|role ...`` and ``tierstore whoami``: thin faces over the server's IAM
query API (``client.make_iam_client``, the API boto3 and ``aws iam`` use), so they need exactly
the permissions the same IAM calls need (docs/identities.md). Answers are JSON on stdout;
expected failures one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from tierstore.cli._client import _connection_options
from tierstore.cli._duration import duration_arg
from tierstore.client import IamClient, make_iam_client, resolve_settings

__all__ = ["add_iam_commands", "add_whoami_command"]

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


def add_whoami_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "whoami",
        parents=[_connection_options()],
        help="who the configured key is (user or root, ARN)",
        description="Ask the server who the configured access key acts as (IAM GetUser without a name; "
        "a user needs iam:GetUser on itself, as on AWS).",
    )
    p.set_defaults(func=_run(_whoami), command="whoami")


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


def _run(fn: Callable[[IamClient, argparse.Namespace], Any]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from botocore.exceptions import BotoCoreError, ClientError

        name = "tierstore " + " ".join(_command_words(args))
        try:
            settings = resolve_settings(
                args.endpoint, access_key=args.access_key, secret_key=args.secret_key, region=args.region
            )
            doc = fn(make_iam_client(settings, max_attempts=1), args)
        except ClientError as exc:
            err = exc.response.get("Error", {})
            print(f"{name}: {err.get('Code', 'Error')}: {err.get('Message', '')}", file=sys.stderr)
            return 2
        except (BotoCoreError, ValueError, OSError) as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            return 2
        print(json.dumps(doc, indent=1, default=str))
        return 0

    return run


def _command_words(args: argparse.Namespace) -> list[str]:
    """``admin group policy put`` & co., from the parsed subcommand names."""
    out = [args.command]
    for attr in ("admin_command", "group_command", "role_command", "group_policy_command", "role_policy_command"):
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


# --- whoami -------------------------------------------------------------------------------------
def _whoami(iam: IamClient, args: argparse.Namespace) -> Any:
    user = iam.get_user()["User"]
    if "UserName" not in user:
        return {"type": "root", "arn": user["Arn"], "account": ACCOUNT}
    return {"type": "user", "user": user["UserName"], "user_id": user["UserId"], "arn": user["Arn"]}
