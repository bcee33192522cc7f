"""The near-miss guard: the facts a paraphrase must keep, which an embedding barely sees.

Two prompts can embed at cosine 0.97-0.999 and still ask different things: "Track order 48213" /
"48231", "include" / "exclude a file", "flights Paris to Rome" / "Rome to Paris", "the capital of
France" / "of Germany". A semantic hit is therefore allowed only between prompts whose
:func:`signature` is equal. The signature holds:

- **numbers and IDs**, in order: every token with a digit (``48213``, ``v2``, ``A-113``, ``3.5``;
  ``1,000`` is ``1000``) and the number words zero to twenty, hundred, thousand, million, billion
  (as digits: "two" is ``2``), plus ordinals ("first", "2nd");
- **negation**: whether the prompt holds a negation (not, no, never, without, ``n't``, ...) or a
  prefix-negated common adjective ("illegal", "unavailable", "incomplete");
- **polarity**: which side of an opposite pair the prompt takes (include/exclude,
  enable/disable, increase/decrease, before/after, min/max, ...; synonyms share a side). Only
  axes with second-side words are recorded ("-", or "±" with both sides), which tells every flip
  apart and lets a paraphrase add a first-side word ("accept", "good", "safe");
- **named entities, with their role**: capitalized words (a sentence's first word only when it is
  not a common sentence opener), quoted text, code-like tokens (``snake_case``, ``CamelCase``,
  ``file.py``, ``a/b``), units, currencies, languages and data formats; each with the direction
  word before it (from, to, into, than, vs, ...), so "Paris to Rome" and "Rome to Paris" differ
  while "to Rome from Paris" equals "from Paris to Rome"; in a prompt with from, than or vs, the
  objects of direction words count in lower case too ("from checking to savings"); names without
  a role keep their order ("Alice ... Bob"), unless the question is symmetric ("difference
  between", "compare", "vs").

The rule is deliberately strict: when in doubt, it refuses the semantic hit (the call goes
upstream). Its hit rate and its precision are measured on a labelled set in
``bench/data/semantic_pairs.jsonl`` (``make bench ONLY=semantic-quality``). Only a hash of the
signature is stored (in the scope of the vector index entry), never the prompt.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Any

import orjson


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_NUMBER_WORDS = {
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
    "eleven": "11",
    "twelve": "12",
    "thirteen": "13",
    "fourteen": "14",
    "fifteen": "15",
    "sixteen": "16",
    "seventeen": "17",
    "eighteen": "18",
    "nineteen": "19",
    "twenty": "20",
    "thirty": "30",
    "forty": "40",
    "fifty": "50",
    "hundred": "100",
    "thousand": "1000",
    "million": "1000000",
    "billion": "1000000000",
    "half": "0.5",
    "dozen": "12",
    "first": "#1",
    "second": "#2",
    "third": "#3",
    "fourth": "#4",
    "fifth": "#5",
    "last": "#last",
}

_NEGATIONS = _words(
    """
    not no never without none nobody nothing neither nor nowhere cannot cant dont doesnt didnt isnt
    arent wasnt werent wont wouldnt shouldnt couldnt havent hasnt hadnt mustnt neednt aint
    """
)

# Opposite pairs: each word maps to (axis, side). Words of one side are treated as synonyms.
_POLAR_AXES: list[tuple[str, str, str]] = [
    (
        "include",
        "include includes included including add adds adding added insert append keep contain contains",
        "exclude excludes excluded excluding omit omits skip skips ignore ignores drop drops",
    ),
    (
        "enable",
        "enable enables enabled enabling activate activated turn-on switch-on",
        "disable disables disabled disabling deactivate deactivated turn-off switch-off",
    ),
    (
        "remove",
        "create creates created creating",
        "delete deletes deleted deleting remove removes removed removing erase erased destroy",
    ),
    (
        "allow",
        "allow allows allowed allowing permit permitted grant granted accept accepts accepted approve approved whitelist",
        "deny denies denied block blocks blocked blocking forbid forbidden reject rejects rejected refuse revoke revoked ban banned blacklist",
    ),
    (
        "more",
        "increase increases increased increasing raise raised grow more higher larger bigger greater longer faster maximum max maximize high fast heavy heavier",
        "decrease decreases decreased decreasing reduce reduces reduced lower lowering shrink less fewer smaller shorter slower minimum min minimize low slow light lighter",
    ),
    ("most", "most largest biggest highest best fastest longest greatest", "least smallest lowest worst slowest shortest"),
    ("age", "old older oldest elder", "young younger youngest"),
    ("cost", "expensive costly pricier priciest premium", "cheap cheaper cheapest inexpensive affordable budget"),
    ("open", "open opens opened opening unlock unlocked unlocking", "close closes closed closing shut lock locked locking"),
    (
        "start",
        "start starts started starting begin begins launch resume",
        "stop stops stopped stopping end ends finish halt pause quit",
    ),
    (
        "io",
        "import imports imported importing upload uploads uploaded input incoming inbound receive received receiving",
        "export exports exported exporting download downloads downloaded output outgoing outbound send sent sending",
    ),
    ("rw", "read reads reading", "write writes writing"),
    (
        "crypt",
        "encrypt encrypts encrypted encrypting encryption encode encoding compress compressed zip",
        "decrypt decrypts decrypted decrypting decryption decode decoding decompress decompressed unzip",
    ),
    ("time", "before earlier prior previous past yesterday", "after later next following future tomorrow newer newest latest"),
    ("trade", "buy buys bought buying purchase purchasing", "sell sells sold selling"),
    (
        "sub",
        "subscribe subscribed subscribing join joined follow follows log-in sign-in signin login connect connected mount install installed installing upgrade upgrading",
        "unsubscribe unsubscribed leave unfollow log-out sign-out signout logout disconnect disconnected unmount uninstall uninstalled uninstalling downgrade downgrading",
    ),
    ("show", "show shows showing visible display reveal unhide expand", "hide hides hiding hidden invisible conceal collapse"),
    (
        "truth",
        "true yes valid correct positive pass passing succeed success safe",
        "false invalid incorrect wrong negative fail failing failure unsafe impossible",
    ),
    ("order", "ascending asc", "descending desc reverse reversed"),
    ("win", "win wins won winning gain gains profit", "lose loses lost losing loss losses"),
    ("push", "push pushes pushed pushing", "pull pulls pulled pulling"),
    ("merge", "merge merges merged merging combine", "split splits splitting separate"),
    ("case", "uppercase", "lowercase"),
    ("sync", "synchronous sync blocking", "asynchronous async non-blocking nonblocking"),
    ("public", "public", "private"),
    ("hot", "hot warm warmer hotter", "cold cool cooler colder"),
    ("good", "good better benefits benefit advantages pros", "bad worse risks risk disadvantages cons dangers"),
]
_POLAR: dict[str, tuple[str, str]] = {}
"""Polar word → (axis, side). A prompt records the axes it has second-side words on ("-"), or
both sides ("±"); first-side words alone record nothing. That still tells every flip apart (one
prompt has the second-side word, the other not: "show" / "hide", "show hidden" / "hide"), and a
paraphrase that adds a first-side word ("good", "accept", "safe") is not refused."""
for _axis, _plus, _minus in _POLAR_AXES:
    for _word in _plus.split():
        _POLAR.setdefault(_word, (_axis, "+"))
    for _word in _minus.split():
        _POLAR.setdefault(_word, (_axis, "-"))

# Adjectives whose negative is made with a prefix: "illegal" records a negation ("legal" does not).
_NEGATABLE = _words(
    """
    legal lawful possible valid correct able available safe secure stable responsive connected
    visible necessary allowed authorized authorised sure usual common likely happy healthy fair
    honest mature patient polite regular relevant reliable successful supported known limited
    ethical moral logical rational accurate complete compatible consistent dependent appropriate
    comfortable convenient clear certain official acceptable affordable aware enabled encrypted
    verified approved paid read locked installed checked employed friendly lucky natural reasonable
    sufficient willing wise
    """
)
_NEGATIVE_PREFIXES = ("un", "in", "il", "im", "ir", "dis", "non", "non-")


def _prefix_negated(lower: str) -> bool:
    return any(lower.startswith(prefix) and lower[len(prefix) :] in _NEGATABLE for prefix in _NEGATIVE_PREFIXES)


# Lowercase words that name a specific thing a paraphrase must keep.
_NAMES = _words(
    """
    usd euro euros eur yen jpy gbp sterling rupee rupees inr yuan cny franc francs bitcoin btc
    ethereum eth peso pesos dollar dollars english spanish french german italian portuguese chinese
    mandarin japanese korean russian arabic hindi dutch swedish polish turkish greek hebrew latin
    json csv xml yaml yml toml html markdown pdf docx xlsx png jpg jpeg gif svg webp mp3 mp4 wav zip
    tar utf8 string str int integer float double decimal hex hexadecimal binary octal bool boolean
    list array tuple dict dictionary bytes bytearray char datetime timestamp utc gmt est pst cet
    python javascript typescript java kotlin swift rust golang ruby php perl scala haskell sql bash
    powershell linux windows macos ios android mac iphone ipad postgres postgresql mysql sqlite
    mongodb redis docker kubernetes aws azure gcp react vue angular django flask numpy pandas excel
    monday tuesday wednesday thursday friday saturday sunday january february march april june july
    august september october november december north south east west northern southern eastern
    western
    """
)
# Units count only next to a number or a direction word ("5 miles", "miles to kilometers").
_UNITS = _words(
    """
    celsius fahrenheit kelvin km kilometer kilometers kilometre kilometres mile miles meter meters
    metre metres cm centimeter centimeters mm millimeter millimeters inch inches foot feet yard
    yards kg kilogram kilograms gram grams pound pounds lb lbs ounce ounces oz liter liters litre
    litres gallon gallons cup cups tablespoon tablespoons teaspoon teaspoons ml second seconds
    minute minutes hour hours day days week weeks month months year years mph kph kmh byte kb mb gb
    tb kib mib gib bit bits degrees percent
    """
)
# Words that make a relation symmetric: the order of the entities does not matter then.
_SYMMETRIC = _words(
    """
    differ differs difference differences different compare comparison compared between similar vs
    versus
    """
)

_OPENERS = _words(
    """
    a an the what whats how hows why when where who whom whose which can could should would will
    shall is are was were do does did has have had may might must please i im ive id you your we our
    my me tell give show explain list write describe summarize summarise translate convert compare
    find get make create help let lets is it its this that these those there here hi hello hey
    thanks thank any some in on at for from to of by with if so and or but as not no yes okay ok
    also then now just suggest recommend provide generate calculate compute define name draft
    rewrite fix debug check set use send book order cancel reset change update delete remove add
    install run open close start stop turn enable disable quick steps best good track reserve
    transfer move copy forward route flights flight exchange refund pay ship multiply divide
    schedule plan compose outline proofread edit review analyze analyse sort filter search look show
    display print read call email text message remind buy sell rate rank choose pick select
    recommend estimate predict design build implement code solve prove derive simplify expand
    evaluate sum count shorten lengthen improve optimize create draw paint sing play teach learn
    study visit travel go drive walk fly cook bake hotels hotel restaurants restaurant weather news
    price prices cost
    """
)

_DIRECTIONS = {
    "to": "to",
    "into": "to",
    "towards": "to",
    "toward": "to",
    "onto": "to",
    "->": "to",
    "from": "from",
    "than": "than",
    "vs": "vs",
    "versus": "vs",
    "over": "over",
    "under": "under",
    "before": "before",
    "after": "after",
    "against": "vs",
    "per": "per",
}
_SKIP_BETWEEN = _words(
    """
    a an the my your our their his her its this that these those some
    """
)

_TOKEN = re.compile(
    r"""
      "(?P<dq>[^"\n]{1,80})"            # "quoted"
    | `(?P<bq>[^`\n]{1,80})`            # `code`
    | (?<![\w])'(?P<sq>[^'\n]{1,80})'(?![\w])
    | (?P<num>[-+]?\$?\d[\d,]*(?:\.\d+)?%?[A-Za-z]*(?:[-_/.:]\w+)*)
    | (?P<word>[A-Za-z][\w']*(?:[-_./:][\w]+)*)
    | (?P<arrow>->|→)
    | (?P<end>[.!?;\n]+)
    """,
    re.VERBOSE,
)


def _number(token: str) -> str:
    core = token.replace(",", "").lstrip("+$").lower()
    return core


_PHRASES = re.compile(r"\b(log|sign|opt|check|turn|switch|plug|zoom|scroll)\s+(in|out|on|off|up|down)\b", re.IGNORECASE)
_SET_PHRASES = re.compile(r"\b(?:the\s+)?best\s+(?:way|method|approach)\b", re.IGNORECASE)


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).replace("\u2019", "'")  # a typographic apostrophe
    text = _SET_PHRASES.sub("way", text)
    return _PHRASES.sub(lambda m: f"{m.group(1)}-{m.group(2)}", text)


def _tokens(text: str) -> list[tuple[str, str]]:
    return [(match.lastgroup or "", match.group(match.lastgroup or 0)) for match in _TOKEN.finditer(_fold(text))]


def features(text: str) -> dict[str, Any]:
    """The guard's view of a prompt: numbers, negation, polarity and entities with roles."""
    tokens = _tokens(text)
    numbers: list[str] = []
    negated = False
    polarity: set[str] = set()
    roled: set[str] = set()
    ordered: list[str] = []  # capitalized names without a role: their order matters ("Alice ... Bob")
    unordered: list[str] = []  # lexicon words and quoted text: order does not matter
    symmetric = False
    # with from, than or vs in the prompt, the objects of direction words are roles even in lower case
    has_roles = any(kind == "word" and value.lower() in ("from", "than", "vs", "versus") for kind, value in tokens)
    sentence_start = True
    direction = "."
    previous = ""

    def entity(name: str, keep_order: bool = False) -> None:
        nonlocal direction
        if direction == ".":
            (ordered if keep_order else unordered).append(name)
        else:
            roled.add(f"{direction}:{name}")
        direction = "."

    for position, (kind, value) in enumerate(tokens):
        following = tokens[position + 1][1].lower() if position + 1 < len(tokens) else ""
        if kind == "end":
            sentence_start, direction, previous = True, ".", "end"
            continue
        if kind == "arrow":
            direction, previous = "to", "direction"
            continue
        if kind in ("dq", "bq", "sq"):
            entity(f"'{value.strip().lower()}'")
            sentence_start, previous = False, "entity"
            continue
        if kind == "num":
            numbers.append(_number(value))
            sentence_start, direction, previous = False, ".", "number"
            continue
        word = value
        lower = word.lower()
        bare = lower.replace("'", "")
        first, sentence_start = sentence_start, False
        if bare in _NEGATIONS or lower.endswith("n't"):
            negated, previous = True, "word"
            continue
        if lower in _NUMBER_WORDS:
            numbers.append(_NUMBER_WORDS[lower])
            previous = "number"
            continue
        if lower in _SYMMETRIC:
            symmetric = True
        if _prefix_negated(lower):
            negated = True
        if lower in _POLAR:  # before/after, over/under: polar and direction words at once
            polarity.add("".join(_POLAR[lower]))
        if lower in _DIRECTIONS:
            direction, previous = _DIRECTIONS[lower], "direction"
            continue
        name = lower.rstrip(".").removesuffix("'s")
        if _is_entity(word, lower, first):
            entity(name, keep_order=lower not in _NAMES)
            previous = "entity"
        elif lower in _UNITS and (previous in ("number", "direction") or following in ("to", "into")):
            entity(name)
            previous = "entity"
        elif has_roles and direction in ("from", "to", "than", "vs") and lower not in _SKIP_BETWEEN and lower not in _POLAR:
            entity(name)  # "from checking to savings", "heavier than silver": the objects are roles
            previous = "entity"
        elif lower not in _SKIP_BETWEEN:
            direction, previous = ".", "word"
    if symmetric:  # "difference between A and B" == "how does B differ from A"
        entities = sorted([item.split(":", 1)[-1] for item in roled] + ordered + unordered)
    else:
        entities = sorted(roled) + sorted(unordered) + ["|", *ordered]
    axes = {label[:-1] for label in polarity if label.endswith("-")}
    sides = sorted(f"{axis}±" if f"{axis}+" in polarity else f"{axis}-" for axis in axes)
    return {"n": numbers, "neg": negated, "pol": sides, "ent": entities}


def _is_entity(word: str, lower: str, first: bool) -> bool:
    if lower in _NAMES:
        return True
    if lower in _POLAR or lower in _UNITS:
        return False
    if any(c in word for c in "_./:") or any(c.isdigit() for c in word):
        return True  # code-like: snake_case, file.py, a/b, host:port
    if any(c.isupper() for c in word[1:]):
        return True  # CamelCase, iPhone, USD
    if word[0].isupper() and word != "I" and not lower.startswith("i'"):
        return not (first and lower.removesuffix("'s").replace("'", "") in _OPENERS)
    return False


def signature(text: str) -> str:
    """A short hash of :func:`features`: two prompts may share a semantic entry only when their
    signatures are equal."""
    return hashlib.sha256(orjson.dumps(features(text), option=orjson.OPT_SORT_KEYS)).hexdigest()[:24]
