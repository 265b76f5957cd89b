"""``reddit``: a Postmill-style forum (forums, posts, comments, votes, users) on SQLite.

Pages: ``/`` (newest posts), ``/forums`` (alphabetical), ``/f/<forum>``, ``/f/<forum>/<id>/<slug>``
(a post, its votes and comments; signed-in users vote and comment), ``/submit/<forum>``,
``/user/<name>`` and ``/login``.  URLs follow Postmill's, as WebArena's tasks grade them.

Example:
    >>> app = ForumApp()
    >>> app.db.one("SELECT count(*) AS n FROM forums")["n"]
    8
"""

from __future__ import annotations

import random
import sqlite3

from agentgym_envs.families.web.webarena.sites.common import (
    Request,
    Response,
    SiteApp,
    SiteDatabase,
    e,
    page,
    slug,
)

FORUMS = {
    "books": ("Books", "novels", ["fantasy", "mystery", "classic", "sci-fi", "poetry", "biography"]),
    "movies": ("Movies", "films", ["horror", "comedy", "documentary", "animated", "noir", "western"]),
    "gaming": ("Gaming", "games", ["indie", "strategy", "racing", "puzzle", "co-op", "retro"]),
    "science": ("Science", "discoveries", ["physics", "biology", "astronomy", "chemistry", "geology", "ecology"]),
    "cooking": ("Cooking", "recipes", ["vegan", "baking", "grilling", "soup", "pasta", "breakfast"]),
    "travel": ("Travel", "trips", ["island", "mountain", "city", "train", "road", "desert"]),
    "music": ("Music", "albums", ["jazz", "folk", "punk", "ambient", "opera", "blues"]),
    "technology": ("Technology", "gadgets", ["laptop", "keyboard", "router", "camera", "drone", "e-reader"]),
}
USERS = ("MarvelsGrantMan136", "quiet_otter", "laser_lemon", "mapmaker77", "old_fern", "tidepool", "zig_zagger",
         "north_wind", "paper_crane", "copper_kettle", "midnight_owl", "sunny_slope")
DEFAULT_USER = "MarvelsGrantMan136"
PASSWORD = "test1234"
_OPENERS = ("What are your favourite {kind} {plural}?", "Underrated {kind} {plural} thread",
            "My first time with {kind} {plural}", "Best {kind} {plural} of the decade?",
            "Looking for {kind} {plural} recommendations", "Unpopular opinion about {kind} {plural}")
_COMMENTS = ("Totally agree with this.", "I had the opposite experience.", "Thanks for sharing!",
             "Can you say more about that?", "This is the best post here today.", "Bookmarked for later.",
             "Not sure I follow, but interesting.", "Same here, ten years ago.")


def build_forum(con: sqlite3.Connection, seed: int = 0) -> None:
    """The forum's schema and seeded content (deterministic in ``seed``)."""
    rng = random.Random(f"agentgym-webarena-reddit-{seed}")
    con.executescript(
        """
        CREATE TABLE users (username TEXT PRIMARY KEY, password TEXT);
        CREATE TABLE forums (name TEXT PRIMARY KEY, title TEXT, description TEXT);
        CREATE TABLE submissions (id INTEGER PRIMARY KEY, forum TEXT, user TEXT, title TEXT, body TEXT);
        CREATE TABLE comments (id INTEGER PRIMARY KEY, submission_id INTEGER, user TEXT, body TEXT);
        CREATE TABLE votes (submission_id INTEGER, user TEXT, value INTEGER, PRIMARY KEY (submission_id, user));
        """
    )
    con.executemany("INSERT INTO users VALUES (?, ?)", [(u, PASSWORD) for u in USERS])
    posts = []
    for name, (title, plural, kinds) in FORUMS.items():
        con.execute("INSERT INTO forums VALUES (?, ?, ?)", (name, title, f"Everything about {plural}."))
        for i, kind in enumerate(kinds):
            posts.append((name, rng.choice(USERS[1:]), _OPENERS[i].format(kind=kind, plural=plural),
                          f"Let's talk about {kind} {plural}. " + rng.choice(_COMMENTS)))
    rng.shuffle(posts)
    for post in posts:
        sid = con.execute("INSERT INTO submissions (forum, user, title, body) VALUES (?, ?, ?, ?)", post).lastrowid
        for _ in range(rng.randint(0, 5)):
            con.execute("INSERT INTO comments (submission_id, user, body) VALUES (?, ?, ?)",
                        (sid, rng.choice(USERS[1:]), rng.choice(_COMMENTS)))
        for voter in rng.sample(USERS[1:], rng.randint(0, 8)):
            con.execute("INSERT INTO votes VALUES (?, ?, ?)", (sid, voter, rng.choice((1, 1, 1, -1))))


class ForumApp(SiteApp):
    """The forum (``reddit`` in WebArena's task configs).

    Example:
        >>> ForumApp().db.one("SELECT count(*) AS n FROM submissions")["n"]
        48
    """

    name = "reddit"
    cookie_name = "forum_session"
    default_user = DEFAULT_USER

    def __init__(self, seed: int = 0):
        self.db = SiteDatabase(f"reddit-{seed}", lambda con: build_forum(con, seed))

    # ---- queries ---------------------------------------------------------------------------
    def score(self, sid: int) -> int:
        return int(self.db.one("SELECT coalesce(sum(value), 0) AS s FROM votes WHERE submission_id = ?", sid)["s"])

    def comment_count(self, sid: int) -> int:
        return int(self.db.one("SELECT count(*) AS n FROM comments WHERE submission_id = ?", sid)["n"])

    # ---- pages -------------------------------------------------------------------------------
    def _nav(self, user: str | None) -> str:
        who = (f"<a href='/user/{e(user)}'>{e(user)}</a>" if user else "<a href='/login'>Log in</a>")
        return f"<a href='/'>Postmill</a><a href='/forums'>Forums</a>{who}"

    def _listing(self, rows: list) -> str:
        items = []
        for r in rows:
            url = f"/f/{r['forum']}/{r['id']}/{slug(r['title'])}"
            items.append(
                f"<li class='submission-row'><a href='{url}'>{e(r['title'])}</a> <span>submitted by "
                f"<a href='/user/{e(r['user'])}'>{e(r['user'])}</a> to <a href='/f/{r['forum']}'>f/{r['forum']}</a>"
                f"</span> <span>{self.score(r['id'])} points</span> <a href='{url}'>{self.comment_count(r['id'])} "
                "comments</a></li>"
            )
        return f"<ul>{''.join(items)}</ul>" if items else "<p>No submissions.</p>"

    def route(self, req: Request) -> Response | None:
        user = self.user(req)
        nav = self._nav(user)
        parts = [p for p in req.path.split("/") if p]
        if req.path == "/":
            rows = self.db.rows("SELECT * FROM submissions ORDER BY id DESC LIMIT 20")
            return page("Postmill", nav, f"<h1>Newest submissions</h1>{self._listing(rows)}")
        if req.path == "/forums":
            rows = self.db.rows("SELECT * FROM forums ORDER BY lower(name)")
            links = "".join(f"<li><a href='/f/{r['name']}'>{e(r['name'])}</a> <span>{e(r['description'])}</span></li>"
                            for r in rows)
            return page("Forums", nav, f"<h1>Forums, alphabetically</h1><ul>{links}</ul>")
        if req.path == "/login":
            if req.method == "POST":
                name = req.form.get("username", "")
                if self.check_password(name, req.form.get("password", "")):
                    return self.login_response(name, "/")
            return page("Log in", nav, "<h1>Log in</h1><form method='post' action='/login'>"
                        "<input name='username' aria-label='Username'><input type='password' name='password' "
                        "aria-label='Password'><button type='submit'>Log in</button></form>")
        if parts[0] == "user" and len(parts) == 2:
            return self._user_page(parts[1], nav)
        if parts[0] == "submit" and len(parts) == 2:
            return self._submit(req, parts[1], user, nav)
        if parts[0] == "sv" and len(parts) == 2 and req.method == "POST":
            return self._vote(req, int(parts[1]), user)
        if parts[0] == "f" and len(parts) >= 2:
            forum = self.db.one("SELECT * FROM forums WHERE name = ?", parts[1])
            if forum is None:
                return None
            if len(parts) == 2:
                rows = self.db.rows("SELECT * FROM submissions WHERE forum = ? ORDER BY id DESC", forum["name"])
                return page(f"f/{forum['name']}", nav,
                            f"<h1>f/{e(forum['name'])}</h1><p>{e(forum['description'])}</p>"
                            f"<a href='/submit/{forum['name']}'>Submit a post</a>{self._listing(rows)}")
            if parts[2].isdigit():
                sid = int(parts[2])
                if len(parts) >= 4 and parts[3] == "comment" and req.method == "POST":
                    return self._comment(req, forum["name"], sid, user)
                return self._post_page(forum["name"], sid, user, nav)
        return None

    def _post_page(self, forum: str, sid: int, user: str | None, nav: str) -> Response | None:
        post = self.db.one("SELECT * FROM submissions WHERE id = ? AND forum = ?", sid, forum)
        if post is None:
            return None
        mine = self.db.one("SELECT value FROM votes WHERE submission_id = ? AND user = ?", sid, user or "")
        my_vote = mine["value"] if mine else 0
        comments = self.db.rows("SELECT * FROM comments WHERE submission_id = ? ORDER BY id", sid)
        items = "".join(f"<li class='comment'><a href='/user/{e(c['user'])}'>{e(c['user'])}</a> "
                        f"<span class='comment__body'>{e(c['body'])}</span></li>" for c in comments)
        votes = ""
        if user:
            votes = (f"<form method='post' action='/sv/{sid}' style='display:inline'><input type='hidden' name='value' "
                     f"value='1'><button type='submit'>{'Upvoted' if my_vote == 1 else 'Upvote'}</button></form>"
                     f"<form method='post' action='/sv/{sid}' style='display:inline'><input type='hidden' name='value' "
                     f"value='-1'><button type='submit'>{'Downvoted' if my_vote == -1 else 'Downvote'}</button></form>")
            reply = (f"<form method='post' action='/f/{forum}/{sid}/comment'><textarea name='body' aria-label='Comment'>"
                     "</textarea><button type='submit'>Post comment</button></form>")
        else:
            reply = "<p><a href='/login'>Log in</a> to vote and comment.</p>"
        body = (
            f"<div class='submission' data-my-vote='{my_vote}'><h1 class='submission__title'>{e(post['title'])}</h1>"
            f"<p>submitted by <a href='/user/{e(post['user'])}'>{e(post['user'])}</a> to "
            f"<a href='/f/{forum}'>f/{forum}</a></p><p class='submission__body'>{e(post['body'])}</p>"
            f"<p><span class='submission__score'>{self.score(sid)}</span> points {votes}</p></div>"
            f"<h2>{len(comments)} comments</h2><ul class='comments'>{items}</ul>{reply}"
        )
        return page(post["title"], nav, body)

    def _vote(self, req: Request, sid: int, user: str | None) -> Response:
        post = self.db.one("SELECT * FROM submissions WHERE id = ?", sid)
        if user is None or post is None:
            return Response(location="/login")
        value = 1 if req.form.get("value") == "1" else -1
        self.db.write("INSERT OR REPLACE INTO votes VALUES (?, ?, ?)", sid, user, value)
        return Response(location=f"/f/{post['forum']}/{sid}/{slug(post['title'])}")

    def _comment(self, req: Request, forum: str, sid: int, user: str | None) -> Response:
        post = self.db.one("SELECT * FROM submissions WHERE id = ? AND forum = ?", sid, forum)
        if user is None or post is None:
            return Response(location="/login")
        text = req.form.get("body", "").strip()
        if text:
            self.db.write("INSERT INTO comments (submission_id, user, body) VALUES (?, ?, ?)", sid, user, text[:2000])
        return Response(location=f"/f/{forum}/{sid}/{slug(post['title'])}")

    def _submit(self, req: Request, forum: str, user: str | None, nav: str) -> Response | None:
        if self.db.one("SELECT name FROM forums WHERE name = ?", forum) is None:
            return None
        if user is None:
            return Response(location="/login")
        title, body = req.form.get("title", "").strip(), req.form.get("body", "").strip()
        if req.method == "POST" and title:
            sid = self.db.write("INSERT INTO submissions (forum, user, title, body) VALUES (?, ?, ?, ?)",
                                forum, user, title[:300], body[:5000])
            return Response(location=f"/f/{forum}/{sid}/{slug(title)}")
        form = (f"<h1>Create submission in f/{e(forum)}</h1><form method='post' action='/submit/{forum}'>"
                "<input name='title' aria-label='Title'><textarea name='body' aria-label='Body'></textarea>"
                "<button type='submit'>Create submission</button></form>")
        return page("Submit", nav, form)

    def _user_page(self, name: str, nav: str) -> Response | None:
        if self.db.one("SELECT username FROM users WHERE username = ?", name) is None:
            return None
        posts = self.db.rows("SELECT * FROM submissions WHERE user = ? ORDER BY id DESC", name)
        count = self.db.one("SELECT count(*) AS n FROM comments WHERE user = ?", name)["n"]
        return page(name, nav, f"<h1>{e(name)}</h1><p>{count} comments</p><h2>Submissions</h2>{self._listing(posts)}")
