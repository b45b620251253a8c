"""A local emulator of Meta's Instagram Send API (``POST /{version}/{account}/messages``) and attachment
upload (``POST /{version}/{account}/message_attachments``) for the demo, the tests and the benchmarks.

Its one job: answer like Meta would. It checks what Meta checks — written from Meta's docs
(Meta's "Send a Message" page, Meta's Postman collection in tests/data/meta/, "Graph API
rate limiting", "Graph API / Handling Errors"), independently of ``schemas/`` so a mistake shared with
igsend cannot pass both — answers with Meta's success and error bodies, enforces per-account, per-class
limits with Meta's throttling codes and usage headers, and can add latency, random transient errors and
scripted faults. ``/_sandbox/*`` shows what it accepted (never the tokens). asyncio, so latency costs no
thread per request.

Login kind. Meta has two hosts with different budgets and error types; the sandbox serves both on one
port and tells an account's login kind by one rule: **the token's prefix** (Instagram-Login user tokens
start ``IG``, Facebook-Login Page tokens ``EAA``), which is what the account is, whatever encoding a sender
picks. A token with neither prefix counts as ``--default-login`` (instagram: the worker's default, and the
smaller budget). An explicit setting wins: ``--login ACCOUNT=facebook`` or ``POST /_sandbox/config
{"logins": {"ACCOUNT": "facebook"}}`` (ACCOUNT is the id in the path, or the ``me-…`` key of a /me call).

Message kinds (:mod:`sandbox.wire`, each rule citing Meta's page): text and links, one image, video, audio
or file by ``url`` or ``attachment_id``, up to 10 images in ``message.attachments``, shared posts, the heart
sticker, text with 1-13 ``quick_replies`` (``content_type: text`` only: phone and email were disabled for
Instagram on 2026-10-05), generic (1-10 elements) and button (1-3 buttons) templates, the product template
(Facebook Login only), ``react``/``unreact``, ``typing_on``/``typing_off``/``mark_seen`` (only ``recipient``
and ``sender_action``), private replies (``recipient: {"comment_id"}`` with text; one per comment per account;
comment ids starting ``INVALID`` answer 100/2534025), ``messaging_type: MESSAGE_TAG`` with ``tag:
HUMAN_AGENT`` (the only tag for Instagram) and ``reply_to: {"mid"}`` on message sends. A refusal is code 100
naming the param (``param message[attachments] ...``).

Uploads (Facebook Login only; Instagram Login gets code 100): multipart ``message`` + ``platform=instagram``
+ the file in ``filedata`` (or ``payload.url``) answers ``{"attachment_id"}``; image 8 MB, others 25 MB
(10^6-byte MB). An id the sandbox issued must be sent as its type, and only once unless ``is_reusable``; other
ids are taken on trust.

Budgets (calls/s per account, token buckets holding one second): Instagram Login 100 text-class, Facebook
Login 300; audio and video 10 for both. Meta names images, GIFs, files, shared posts and templates in
neither class: they count as text, as igsend's worker counts them. ``--rate-limit N`` / ``{"rate_limit": N}``
overrides the text budget of every account, ``--media-rate-limit`` / ``media_rate_limit`` the audio/video
one; ``null`` (the default) means Meta's per-login budgets. Above the budget: ``613/2534040`` with
Retry-After and usage headers at 100. Private replies have a budget of their own, 750 per hour per account
(``--private-reply-limit`` / ``private_reply_limit`` per hour); above it: 613 without subcode.

Errors: ``{"error": {"message", "type", "code", "error_subcode"?, "is_transient"?, "fbtrace_id"}}`` with
``type`` IGApiException for Instagram-Login accounts, OAuthException for Facebook-Login ones
(GraphMethodException for 100/33 there). HTTP status by code: 400 for bad parameters, tokens and most
codes; 403 for code 10 (the 24-hour window 10/2534022 included) and 200-299; 500 for 1 and 2. Meta does
not document the status of a throttled call (third parties report 400 and 429), so the sandbox picks per
code: 400 for the Graph-wide limits 4, 17, 32, 341; 429 for 613 and the business-use-case limits 80001,
80002, 80006 (but 400 for 613/2018338, tag misuse, a refusal). igsend must decide by code, never by status.

Conversations API (:mod:`sandbox.conversations`): ``GET /{version}/{account}/conversations?platform=instagram
&user_id=IGSID``, ``GET /{version}/{conversation-id}?fields=messages{id,created_time,from,to,message}`` and ``GET
/{version}/{message-id}`` show what the sandbox accepted, the 20 most recent messages of each conversation, at
2 calls/s per account (613 above it).

Routes: anything but ``POST /{version}/{node}/messages`` or ``.../message_attachments`` (and the Conversations
API's GETs) gets a Graph error, never a plain-text 404/405:
another method ``100/33 "Unsupported get request. Object with ID ..."``, an unknown edge or extra path
``2500 "Unknown path components: /…"``, a malformed node ``803``. An unversioned ``POST /me/messages`` is
served, as Meta serves it with the App Dashboard's version (introspection shows ``"version": null``).

Faults (``POST /_sandbox/faults``, see :mod:`sandbox.faults` for the shapes): queued or sticky
errors per recipient; a lost answer after accepting (``hang``) or a connection dropped before accepting
(``drop``); named per-recipient refusals (200/1545041, 200/2018028, 10/2018065, 10/2534022, 551/1545041,
100/2018001) on every message to that recipient; one error for every send of an account until
cleared; app-wide ``(#4) Application request limit reached`` for N seconds over a group of accounts (all
of them by default). Magic recipients ``ERR_{code}_{subcode}`` always answer that error. A private reply's
faults are keyed by its comment id.

Introspection: ``GET /_sandbox/messages`` (each with ``body``, ``kind`` and ``send_class``), ``/_sandbox/stats``,
``/_sandbox/uploads`` (``{"count", "uploads": {attachment_id: {"account", "type", "size", "sha256",
"filename", "url", "is_reusable", "sends", ...}}}``), ``/_sandbox/private_replies`` (``{"count",
"private_replies": [{"account", "comment_id", "recipient_id", "message_id", "received_at"}]}``), both
filtered by ``?account=``; ``DELETE /_sandbox/messages`` clears all of it.

Tokens (:mod:`sandbox.tokens`): ``GET /refresh_access_token`` refreshes an Instagram-Login token at least a day old
(``refresh_min_age`` in ``/_sandbox/config``, ``--refresh-min-age``; 0 for tests) into a new one that is accepted
from then on; ``GET /{version}/debug_token`` tells a token's ``expires_at``, ``data_access_expires_at`` and
``is_valid``; ``POST /_sandbox/tokens`` adds a token or sets its issue and expiry times (an expired one answers
190/463). Each message in ``/_sandbox/messages`` carries the ``token_digest`` it was sent with.

Code: :mod:`sandbox.server` routes each path to its endpoint family's module (:mod:`sandbox.messages` the Send
API, :mod:`sandbox.uploads`, :mod:`sandbox.lookups` the Conversations API, :mod:`sandbox.token_calls`,
:mod:`sandbox.control` for ``/_sandbox/*``), all sharing :mod:`sandbox.state` (settings, what was accepted, budgets).

Run it with ``python -m sandbox --port 8899 --token T``.
"""

from sandbox.server import Sandbox, SandboxConfig, create_app, main, run, serve

__all__ = ["Sandbox", "SandboxConfig", "create_app", "main", "run", "serve"]
