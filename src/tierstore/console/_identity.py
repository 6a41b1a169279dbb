"""Page 7, Identity: users, access keys (a new secret is shown once), groups, managed policies
(an editor whose validation errors are shown on the form) and service accounts.

Every action is the principal's own request through the dispatcher: the JSON admin endpoints
(``/_tierstore/admin/users``, ``/_tierstore/admin/keys``) and the IAM query API (groups, managed
policies). A principal that may not manage identities sees the dispatcher's ``AccessDenied``
as "not allowed"; nothing is hidden or shown by the console's own judgement.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from tierstore.console._admin import Section, iam, section
from tierstore.console._app import Refused, Reply, Web, console_url, route
from tierstore.console._dispatch import S3Error

__all__: list[str] = []

_USERS = "/_tierstore/admin/users"
_KEYS = "/_tierstore/admin/keys"
_MAX_DOC = 10 * 1024  # a managed policy document (IAM's limit is 6,144 characters without whitespace)


def _user_path(name: str, *rest: str) -> str:
    return "/".join([_USERS, *(quote(p, safe="") for p in (name, *rest))])


async def _overview(web: Web, status: int = 200, **extra: Any) -> Reply:
    users = await section(web.extension("GET", _USERS))
    if users.denied:  # the first thing the page asks: a principal without identity rights stops here
        return _not_allowed(web, users)
    groups = await section(iam(web, "list_groups"))
    policies = await section(iam(web, "list_policies", Scope="Local"))
    return web.render(
        "identity.html", status, page="identity", title="Identity",
        users=users, groups=groups, policies=policies, **extra,
    )  # fmt: skip


def _not_allowed(web: Web, refused: Section[Any]) -> Reply:
    assert refused.error is not None
    return web.render(
        "identity.html", 403, page="identity", title="Identity", refused=refused.error,
        users=refused, groups=Section(None), policies=Section(None),
    )  # fmt: skip


@route("GET", "identity")
async def identity(web: Web) -> Reply:
    return await _overview(web, ok=web.query.get("ok", ""))


@route("POST", "identity/users")
async def create_user(web: Web) -> Reply:
    name = (await web.form()).get("name", "").strip()
    if not name:
        raise Refused(400, "Give the user a name.")
    await web.extension("POST", _USERS, body=json.dumps({"name": name}).encode())
    return web.redirect(console_url("identity/user/" + name, ok=f"User {name} created."))


@route("GET", "identity/user/{name}")
async def user(web: Web) -> Reply:
    name = web.params["name"]
    info = await web.extension("GET", _user_path(name))
    attached = await section(iam(web, "list_attached_user_policies", UserName=name))
    inline = await section(web.extension("GET", _user_path(name, "policies")))
    policies = await section(iam(web, "list_policies", Scope="Local"))
    groups = await section(iam(web, "list_groups"))
    return web.render(
        "identity_user.html", page="identity", title=f"User {name}", user=info, attached=attached,
        inline=inline, policies=policies, groups=groups, ok=web.query.get("ok", ""),
    )  # fmt: skip


async def _new_key(web: Web, name: str, service: bool) -> Reply:
    form = await web.form()
    doc: dict[str, Any] = {"user": name}
    if service:
        doc["service"] = True
        if form.get("label", "").strip():
            doc["name"] = form["label"].strip()
        if form.get("policy", "").strip():
            try:
                json.loads(form["policy"])
            except ValueError as exc:
                raise Refused(400, f"The service account's policy is not JSON: {exc}.") from None
            doc["policy"] = form["policy"]
    key = await web.extension("POST", _KEYS, body=json.dumps(doc).encode())
    # The one time the secret is shown: this answer is not cached (no-store) and not kept.
    return web.render("identity_key.html", page="identity", title="New access key", key=key, user_name=name)


@route("POST", "identity/user/{name}/keys")
async def create_key(web: Web) -> Reply:
    return await _new_key(web, web.params["name"], service=False)


@route("POST", "identity/user/{name}/service-accounts")
async def create_service_account(web: Web) -> Reply:
    return await _new_key(web, web.params["name"], service=True)


@route("POST", "identity/key/{key_id}")
async def change_key(web: Web) -> Reply:
    form = await web.form()
    key_id, owner = web.params["key_id"], form.get("user", "")
    path = f"{_KEYS}/{quote(key_id, safe='')}"
    if form.get("do") == "delete":
        await web.extension("DELETE", path)
        ok = f"Key {key_id} deleted."
    elif form.get("do") in ("Active", "Inactive"):
        await web.extension("PUT", path, body=json.dumps({"status": form["do"]}).encode())
        ok = f"Key {key_id} is now {form['do'].lower()}."
    else:
        raise Refused(400, "Choose delete, Active or Inactive.")
    return web.redirect(console_url("identity/user/" + owner, ok=ok) if owner else console_url("identity", ok=ok))


@route("POST", "identity/user/{name}/delete")
async def delete_user(web: Web) -> Reply:
    name = web.params["name"]
    await web.extension("DELETE", _user_path(name))
    return web.redirect(console_url("identity", ok=f"User {name} deleted."))


# (form field, IAM parameter, the calls that add and remove, what the form chooses)
_MEMBERSHIPS = {
    "policies": ("policy_arn", "PolicyArn", "attach_user_policy", "detach_user_policy", "policy"),
    "groups": ("group", "GroupName", "add_user_to_group", "remove_user_from_group", "group"),
}


@route("POST", "identity/user/{name}/{what}")
async def membership(web: Web) -> Reply:
    """Attach or detach a managed policy (``policies``), join or leave a group (``groups``)."""
    name, what, form = web.params["name"], web.params["what"], await web.form()
    if what not in _MEMBERSHIPS:
        raise Refused(404, "There is no such console page.")
    field, param, add, remove, noun = _MEMBERSHIPS[what]
    value = form.get(field, "")
    if not value:
        raise Refused(400, f"Choose a {noun}.")
    await iam(web, remove if form.get("do") in ("detach", "leave") else add, UserName=name, **{param: value})
    return web.redirect(console_url("identity/user/" + name, ok=f"The {what} of {name} changed."))


@route("POST", "identity/groups")
async def create_group(web: Web) -> Reply:
    name = (await web.form()).get("name", "").strip()
    if not name:
        raise Refused(400, "Give the group a name.")
    await iam(web, "create_group", GroupName=name)
    return web.redirect(console_url("identity", ok=f"Group {name} created."))


@route("POST", "identity/policies")
async def create_policy(web: Web) -> Reply:
    """The policy editor: a document that is not JSON is shown back with where it breaks; one the
    server refuses (``MalformedPolicyDocument``: an unknown action, a bad ARN, a missing Effect)
    with the server's message; either way the text stays in the editor."""
    form = await web.form()
    name, document = form.get("name", "").strip(), form.get("document", "")
    problem = ""
    if not name:
        problem = "Give the policy a name."
    elif len(document) > _MAX_DOC:
        problem = f"The document is longer than {_MAX_DOC} characters."
    else:
        try:
            json.loads(document)
        except json.JSONDecodeError as exc:
            problem = f"The document is not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}."
    if not problem:
        try:
            await iam(web, "create_policy", PolicyName=name, PolicyDocument=document)
        except S3Error as exc:
            if exc.code == "AccessDenied":
                raise
            problem = f"{exc.code}: {exc.message}"
    if problem:
        return await _overview(web, 400, policy_error=problem, policy_name=name, policy_document=document)
    return web.redirect(console_url("identity", ok=f"Policy {name} created."))


@route("GET", "identity/policy/{name}")
async def policy(web: Web) -> Reply:
    name = web.params["name"]
    found = await iam(web, "list_policies", Scope="Local")
    arn = next((p["Arn"] for p in found.get("Policies", []) if p["PolicyName"] == name), None)
    if arn is None:
        raise Refused(404, f"There is no policy {name}.")
    meta = (await iam(web, "get_policy", PolicyArn=arn))["Policy"]
    version = await iam(web, "get_policy_version", PolicyArn=arn, VersionId=meta.get("DefaultVersionId", "v1"))
    document = version["PolicyVersion"]["Document"]
    text = json.dumps(document, indent=2) if not isinstance(document, str) else document
    return web.render("identity_policy.html", page="identity", title=f"Policy {name}", policy=meta, document=text)
