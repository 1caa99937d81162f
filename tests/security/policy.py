"""Who may call what: the expected access policy, by path prefix and method.

The authorization matrix test (test_authorization_matrix.py) lists every URL pattern from
Django's resolver, builds a concrete URL for it from fixture objects, and checks each
(principal, method, URL) cell against the first rule below that matches. A pattern no rule
matches, or whose parameters have no fixture value, fails the test as "unclassified": a new
endpoint cannot ship without someone deciding who may call it.

Decisions recorded here (docs/operations.md "Access policy" says the same):
- Public: /healthz, /readyz, the login/logout views, the SDK features payload (its client key is
  a public identifier, not a secret) and the OpenAPI schema and its docs page (they describe the
  API, which is open source, and hold no data).
- People act through their role in a project (experiments/selectors.py PERMISSIONS); a person who
  is no member of the project gets 404, never a hint that it exists; superusers are admins
  everywhere.
- API keys act only on their own project and only within their scopes; they are never a person:
  people's endpoints and pages ignore them.
- Queueing an analysis needs only "read": it recomputes what a reader may already see.
- Removing stored events (api/v1/projects/P/events/delete) needs "manage": admins only.
- Creating a project (POST api/v1/projects/ and the home page's form) needs staff, the default
  ABACUS_PROJECT_CREATION=staff: the creator becomes the project's admin.
- A project's settings (api/v1/projects/P/settings/) and its webhook signing secret (reveal,
  rotate) need "manage": admins only.
- Notification channels: members read them (a Slack URL masked), admins write them; every
  member reads and sets their own email preferences (notification-preferences/me and the
  notifications page's form).
- Events from browsers: POST api/v1/events/beacon takes an environment's public browser key
  (in the query string) from a page of an allowed origin, and that key opens nothing else (every
  other endpoint ignores it: the "browser-key" column sends it as ?key= everywhere). Members read
  an environment's browser settings (the key is public), admins change them.
- Holdouts (api/v1/projects/P/holdouts/..., p/P/holdout/...): members read and queue a
  comparison, editors create and edit them, admins start and end them (that changes what
  production serves); read-scoped keys of the project read a holdout's results.
- Releases (api/v1/projects/P/releases/...): members read, editors create and move them (in
  production only admins: the services refuse); API keys of the project with the `release`
  scope, only in their own environment (no key here has that scope: tests/releases/test_apis.py
  checks it).
"""

import re
from dataclasses import dataclass
from typing import Literal

SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
ALL_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
# Pages (and the admin) are driven by browsers, whose forms only GET and POST.
PAGE_METHODS = ("GET", "POST")

# "browser": an environment's public browser key, sent as ?key= with an allowed Origin.
Kind = Literal["anonymous", "user", "key", "browser"]


@dataclass(frozen=True)
class Principal:
    """Who makes a request in one column of the matrix."""

    name: str
    kind: Kind
    role: str | None = None  # for users: role in the project under test (None: no member)
    superuser: bool = False
    scopes: frozenset[str] = frozenset()
    own_project: bool = True  # for keys: a key of the project under test
    revoked: bool = False


# experiments/selectors.py PERMISSIONS, restated: the matrix checks the code against it.
ROLE_PERMISSIONS: dict[str, set[str]] = {
    "admin": {"read", "edit", "export", "manage"},
    "editor": {"read", "edit", "export"},
    "analyst": {"read", "export"},
    "viewer": {"read"},
}

ALL_SCOPES = frozenset({"assign", "ingest", "read"})
PRINCIPALS: tuple[Principal, ...] = (
    Principal("anonymous", "anonymous"),
    Principal("superuser", "user", superuser=True),
    Principal("admin", "user", role="admin"),
    Principal("editor", "user", role="editor"),
    Principal("analyst", "user", role="analyst"),
    Principal("viewer", "user", role="viewer"),
    Principal("non-member", "user", role=None),
    Principal("key:assign", "key", scopes=frozenset({"assign"})),
    Principal("key:ingest", "key", scopes=frozenset({"ingest"})),
    Principal("key:read", "key", scopes=frozenset({"read"})),
    Principal("key:all", "key", scopes=ALL_SCOPES),
    Principal("key:other-project", "key", scopes=ALL_SCOPES, own_project=False),
    Principal("key:revoked", "key", scopes=ALL_SCOPES, revoked=True),
    Principal("browser-key", "browser"),
)

# What an answer means. A refusal is 401, 403, 404, 405 or a redirect to a login page; for a
# write (POST, PUT, PATCH, DELETE) an answer that changed nothing counts as a refusal too (a
# read-only page that renders itself for any method lets no one in).
Expect = Literal["allow", "deny", "any"]


class Policy:
    """Expected outcome for a principal and method on the endpoints a rule covers."""

    def __init__(self, name: str) -> None:
        self.name = name

    def expect(self, who: Principal, method: str) -> Expect:
        raise NotImplementedError


class Public(Policy):
    def expect(self, who: Principal, method: str) -> Expect:
        return "any"  # anyone; the test still requires no 5xx and no 401/403


class Staff(Policy):
    """The Django admin: staff (here, the superuser) only; everyone else goes to its login."""

    def expect(self, who: Principal, method: str) -> Expect:
        return "allow" if who.kind == "user" and who.superuser else "deny"


class ProjectCreator(Policy):
    """Who may create projects under ABACUS_PROJECT_CREATION=staff (the default): staff and
    superusers (here, the superuser)."""

    def expect(self, who: Principal, method: str) -> Expect:
        return "allow" if who.kind == "user" and who.superuser else "deny"


class AnyUser(Policy):
    """Any signed-in person, whatever their projects (project list, power calculator, home)."""

    def expect(self, who: Principal, method: str) -> Expect:
        return "allow" if who.kind == "user" else "deny"


class Service(Policy):
    """Service endpoints: an active API key with the scope; the key fixes the project."""

    def __init__(self, scope: str) -> None:
        super().__init__(f"service:{scope}")
        self.scope = scope

    def expect(self, who: Principal, method: str) -> Expect:
        ok = who.kind == "key" and not who.revoked and self.scope in who.scopes
        return "allow" if ok else "deny"


class BrowserIngest(Policy):
    """The beacon endpoint: an environment's public browser key, from an allowed origin."""

    def expect(self, who: Principal, method: str) -> Expect:
        return "allow" if who.kind == "browser" else "deny"


class ProjectPermission(Policy):
    """A project's endpoint: members whose role has the permission; optionally read-scoped keys."""

    def __init__(self, permission: str, key_scope: str | None = None) -> None:
        label = f"project:{permission}" + (f"+key:{key_scope}" if key_scope else "")
        super().__init__(label)
        self.permission = permission
        self.key_scope = key_scope

    def expect(self, who: Principal, method: str) -> Expect:
        if who.kind == "user":
            if who.superuser:
                return "allow"
            if who.role is None:
                return "deny"
            return "allow" if self.permission in ROLE_PERMISSIONS[who.role] else "deny"
        if who.kind == "key" and self.key_scope:
            ok = who.own_project and not who.revoked and self.key_scope in who.scopes
            return "allow" if ok else "deny"
        return "deny"


class SafeOrUnsafe(Policy):
    """One policy for reads (GET/HEAD/OPTIONS), another for writes."""

    def __init__(self, read: Policy, write: Policy) -> None:
        super().__init__(f"{read.name}|{write.name}")
        self.read = read
        self.write = write

    def expect(self, who: Principal, method: str) -> Expect:
        return (self.read if method in SAFE else self.write).expect(who, method)


@dataclass(frozen=True)
class Rule:
    pattern: str  # matched against the URL template, e.g. "api/v1/projects/{project}/metrics/"
    policy: Policy
    why: str

    def matches(self, template: str) -> bool:
        return re.fullmatch(self.pattern, template) is not None


PROJECT = r"api/v1/projects/\{project\}"
PAGE = r"p/\{project\}"
READ_EDIT = SafeOrUnsafe(ProjectPermission("read"), ProjectPermission("edit"))

RULES: tuple[Rule, ...] = (
    # --- public -----------------------------------------------------------------------------
    Rule(r"healthz|readyz", Public("public"), "load balancers and monitoring"),
    Rule(r"api/features/\{client_key\}", Public("public"), "SDKs; the client key is public"),
    Rule(r"sub/\{client_key\}", Public("public"), "SDK streams; the client key is public"),
    Rule(r"accounts/(login|logout)/", Public("public"), "signing in and out"),
    Rule(r"api/v1/(schema|docs)/", Public("public"), "describes the API; holds no data"),
    Rule(r"admin/(login|logout)/", Public("public"), "the admin's own sign in and out"),
    # --- the Django admin -------------------------------------------------------------------
    Rule(r"admin/.*", Staff("staff"), "the Django admin is for staff"),
    # --- services (API keys) ----------------------------------------------------------------
    Rule(r"api/v1/assign(/bulk)?/?", Service("assign"), "assignment"),
    Rule(r"api/v1/events/?", Service("ingest"), "event ingestion"),
    Rule(
        r"api/v1/events/beacon/?",
        BrowserIngest("browser"),
        "events from web pages: a public browser key from an allowed origin, nothing else",
    ),
    # The 'evaluate' scope also opens it (tests/assignments/test_evaluate.py); no key here has it.
    Rule(r"api/v1/evaluate/?", Service("assign"), "flag evaluation: 'evaluate' or 'assign'"),
    # --- people's API -----------------------------------------------------------------------
    Rule(
        r"api/v1/projects/",
        SafeOrUnsafe(AnyUser("user"), ProjectCreator("creator")),
        "lists my projects; staff create one",
    ),
    Rule(
        rf"{PROJECT}/(settings|webhook-secret/\{{action\}})/?",
        ProjectPermission("manage"),
        "webhook URL and signing secret: admins only",
    ),
    Rule(r"api/v1/power/?", AnyUser("user"), "the pre-launch calculator touches no project"),
    Rule(rf"{PROJECT}/(members|api-keys)/.*", ProjectPermission("manage"), "admins only"),
    Rule(
        rf"{PROJECT}/events/delete/?",
        ProjectPermission("manage"),
        "removing stored events changes every result: admins only, audited",
    ),
    Rule(
        rf"{PROJECT}/(.*/)?(results/)?export/?",
        ProjectPermission("export", key_scope="read"),
        "exports: analysts and up; read-scoped keys of the project",
    ),
    Rule(
        rf"{PROJECT}/experiments/\{{key\}}/results(/history|/breakdown)?/?",
        ProjectPermission("read", key_scope="read"),
        "results (their history, their breakdowns by a unit attribute): every member; "
        "read-scoped keys of the project",
    ),
    Rule(
        rf"{PROJECT}/experiments/\{{key\}}/results/(daily|novelty)/?",
        ProjectPermission("read", key_scope="read"),
        "the time views of results (daily lift, novelty): every member; read-scoped keys",
    ),
    Rule(
        rf"{PROJECT}/holdouts/\{{holdout_id\}}/results/?",
        ProjectPermission("read", key_scope="read"),
        "a holdout's comparison (stored snapshots): every member; read-scoped keys",
    ),
    Rule(
        rf"{PROJECT}/holdouts/\{{holdout_id\}}/analyze/?",
        ProjectPermission("read"),
        "queueing a holdout's comparison of what a reader may see",
    ),
    Rule(
        rf"{PROJECT}/holdouts/\{{holdout_id\}}/\{{action\}}/?",
        ProjectPermission("manage"),
        "starting or ending a holdout changes what production serves: admins only",
    ),
    Rule(
        rf"{PROJECT}/library/?",
        ProjectPermission("read", key_scope="read"),
        "the library of decisions (stored results): every member; read-scoped keys",
    ),
    Rule(
        rf"{PROJECT}/experiments/\{{key\}}/analyze/?",
        ProjectPermission("read"),
        "queueing a recomputation of what a reader may see",
    ),
    Rule(
        rf"{PROJECT}/metrics/\{{key\}}/baseline/?",
        ProjectPermission("read"),
        "a metric's recent baseline (read-only, for the calculator): every member, like the metric",
    ),
    Rule(
        rf"{PROJECT}/environments/",
        SafeOrUnsafe(ProjectPermission("read"), ProjectPermission("manage")),
        "environments: members read; admins add one (it gets its own client key)",
    ),
    Rule(
        rf"{PROJECT}/environments/\{{environment\}}/browser/(rotate/?)?",
        SafeOrUnsafe(ProjectPermission("read"), ProjectPermission("manage")),
        "events from browsers: members read the public key and origins; admins change them",
    ),
    Rule(
        rf"{PROJECT}/change-requests/\{{request_id\}}/\{{action\}}/?",
        ProjectPermission("manage"),
        "reviewing a production change: another admin (cancel: the requester or an admin; the "
        "fixture's request is someone else's)",
    ),
    Rule(
        rf"{PROJECT}/notification-channels/(\{{channel_id\}}/)?",
        SafeOrUnsafe(ProjectPermission("read"), ProjectPermission("manage")),
        "notification channels: members read (Slack URLs masked), admins write",
    ),
    Rule(
        rf"{PROJECT}/notification-preferences/me/?",
        ProjectPermission("read"),
        "each member's own email preferences",
    ),
    Rule(
        rf"{PROJECT}/releases/(\{{release_id\}}/(checks/|\{{action\}})?)?",
        SafeOrUnsafe(
            ProjectPermission("read", key_scope="release"),
            ProjectPermission("edit", key_scope="release"),
        ),
        "releases: members read, editors move (production: admins); release-scoped keys of the "
        "project in their own environment",
    ),
    Rule(rf"{PROJECT}/.*", READ_EDIT, "definitions: members read, editors write"),
    # --- pages ------------------------------------------------------------------------------
    Rule(
        r"",
        SafeOrUnsafe(AnyUser("user"), ProjectCreator("creator")),
        "home: my projects; staff create one",
    ),
    Rule(rf"{PAGE}/settings/.*", ProjectPermission("manage"), "members, API keys: admins only"),
    Rule(
        rf"{PAGE}/environments/(new|\{{environment\}}/browser/\{{action\}})/",
        ProjectPermission("manage"),
        "adding an environment, its browser key and origins (the settings page): admins only",
    ),
    Rule(
        rf"{PAGE}/notifications/channels/(\{{channel_id\}}/(remove|toggle)/)?",
        ProjectPermission("manage"),
        "adding, switching off and removing notification channels: admins only",
    ),
    Rule(
        rf"{PAGE}/notifications/(me/)?",
        ProjectPermission("read"),
        "the notifications page and each member's own email preferences",
    ),
    Rule(rf"{PAGE}/(.*/)?export/?", ProjectPermission("export"), "exports: analysts and up"),
    Rule(rf"{PAGE}/experiments/\{{key\}}/analyze/", ProjectPermission("read"), "as the API"),
    Rule(rf"{PAGE}/holdout/\{{holdout_id\}}/analyze/", ProjectPermission("read"), "as the API"),
    Rule(
        rf"{PAGE}/holdout/\{{holdout_id\}}/\{{action\}}/",
        ProjectPermission("manage"),
        "starting or ending a holdout: admins only, as the API",
    ),
    Rule(
        rf"{PAGE}/holdout/(new|\{{holdout_id\}}/(edit|delete))/",
        ProjectPermission("edit"),
        "the holdout's form and deleting a draft: editors and admins",
    ),
    Rule(
        rf"{PAGE}/(experiments|metrics)/(new|\{{key\}}/(edit|delete|\{{action\}}))/",
        ProjectPermission("edit"),
        "forms and actions that change definitions: editors and admins",
    ),
    Rule(
        rf"{PAGE}/(flags|segments)/(new|\{{(flag|segment)\}}/(edit|archive|delete|schedule"
        rf"|schedule/\{{schedule_id\}}/cancel|environments/\{{environment\}}/(toggle|rules)))/"
        rf"|{PAGE}/change-requests/\{{request_id\}}/\{{action\}}/",
        ProjectPermission("edit"),
        "flag and segment forms and actions: editors and admins (production and reviews: the "
        "services refuse with a message)",
    ),
    Rule(
        rf"{PAGE}/releases/(new|\{{release_id\}}/\{{action\}})/",
        ProjectPermission("edit"),
        "the release form and moves: editors and admins (production: the services refuse)",
    ),
    Rule(rf"{PAGE}/(.*)?", READ_EDIT, "pages: members read, editors write"),
)


def rule_for(template: str) -> Rule | None:
    return next((rule for rule in RULES if rule.matches(template)), None)
