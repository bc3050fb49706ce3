"""Hypothesis strategies for hostile text: shell metacharacters, line breaks, NUL, look-alike
characters, huge values and stray whitespace, alone or mixed into otherwise valid values.

``canary`` is the path a shell payload would create if it ever ran; the operator tests pass a
placeholder, the script tests a real path (and the bare name ``CANARY``, relative to the cwd).
"""

from __future__ import annotations

from hypothesis import strategies as st

SHELL_METACHARACTERS = ";|&$()`<>*?[]{}!#~'\"\\"
LINE_BREAKS = ("\n", "\r", "\r\n", "\n\n", "\x0b", "\x0c", "\x85", "\u2028", "\u2029")
CONTROL = ("\x00", "\x1b", "\x7f", "\x01", "\x1f", "\t")
LOOKALIKES = (
    "\uff1a",  # fullwidth colon
    "\u0430",  # Cyrillic a
    "\u0435",  # Cyrillic e
    "\u0441",  # Cyrillic es
    "\u200b",  # zero-width space
    "\u200d",  # zero-width joiner
    "\u202e",  # right-to-left override
    "\ufeff",  # byte order mark
    "\uff10",  # fullwidth digit zero
    "\u0661",  # Arabic-Indic digit one (re's \d matches it)
    "\uff0f",  # fullwidth solidus
    "\uff20",  # fullwidth commercial at
    "\u2024",  # one dot leader
    "\u2010",  # hyphen
    "\u0131",  # dotless i
    "\u212a",  # Kelvin sign (lowercases to k)
)
WHITESPACE = (" ", "  ", "\t", "\u00a0", "\u3000", "\u2003", " \n", "\n ")
CANARY_TEMPLATES = (
    "$(touch {canary})",
    "`touch {canary}`",
    "; touch {canary}",
    ";touch {canary};",
    "| touch {canary}",
    "|touch {canary}",
    "&& touch {canary}",
    "& touch {canary} &",
    "|| touch {canary}",
    "\ntouch {canary}\n",
    "\ntouch {canary}",
    "$(touch${{IFS}}{canary})",
    "'; touch {canary}; '",
    '"; touch {canary}; "',
    "\r\ntouch {canary}\r\n",
    "> {canary}",
    "-o {canary}",
)
PLACEHOLDER_CANARY = "/tmp/ecr-promote-canary"

# A look-alike for each kind of character of a valid reference or ARN.
_SWAPS = {
    "digit": ("\u0661", "\uff11", "\u0967", "\U0001d7cf"),  # Arabic-Indic, fullwidth, Devanagari, math
    "letter": ("\u0430", "\u0435", "\u043e", "\u0455", "\u0131", "\u212a", "\uff41"),
    ":": ("\uff1a", "\u02d0", "\u2236"),
    "/": ("\uff0f", "\u2215", "\u2044"),
    ".": ("\u2024", "\uff0e", "\u3002"),
    "-": ("\u2010", "\u2212", "\uff0d"),
    "@": ("\uff20",),
}
_SEPARATORS = "/:.@-"
_HOW = ("insert", "insert", "boundary", "boundary", "swap", "replace", "wrap", "append", "prepend", "alone")
_SPECIAL = SHELL_METACHARACTERS + "".join(LINE_BREAKS + CONTROL + LOOKALIKES + WHITESPACE)
_VALID_LOOKING = "abcz019:/._-@=+,"


def canary_payloads(canaries: tuple[str, ...] = (PLACEHOLDER_CANARY,)) -> st.SearchStrategy[str]:
    return st.builds(
        lambda template, canary: template.format(canary=canary),
        st.sampled_from(CANARY_TEMPLATES),
        st.sampled_from(canaries),
    )


def fragments(
    canaries: tuple[str, ...] = (PLACEHOLDER_CANARY,), *, nul: bool = True
) -> st.SearchStrategy[str]:
    """A short hostile piece: a shell payload, a line break, a look-alike, a metacharacter run..."""
    special = _SPECIAL if nul else _SPECIAL.replace("\x00", "")
    control = CONTROL if nul else tuple(c for c in CONTROL if c != "\x00")
    return st.one_of(
        canary_payloads(canaries),
        st.text(alphabet=SHELL_METACHARACTERS + " ", min_size=1, max_size=6),
        st.sampled_from(LINE_BREAKS + control + LOOKALIKES + WHITESPACE),
        st.text(alphabet=special + _VALID_LOOKING, min_size=1, max_size=12),
    )


def long_values(
    canaries: tuple[str, ...] = (PLACEHOLDER_CANARY,),
    *,
    nul: bool = True,
    newlines: bool = True,
    max_size: int = 100_000,
) -> st.SearchStrategy[str]:
    """10k to ``max_size`` characters, made by repeating a (hostile or harmless) unit."""

    def repeat(unit: str, size: int) -> str:
        if not newlines:
            unit = unit.replace("\n", "_") or "_"
        return (unit * (size // len(unit) + 1))[:size]

    units = st.one_of(
        fragments(canaries, nul=nul), st.sampled_from(("a", "1", "a/", "-", "A.b_c")), st.text(min_size=1)
    )
    if not nul:
        units = units.map(lambda text: text.replace("\x00", "") or "a")
    return st.builds(repeat, units, st.integers(min_value=10_000, max_value=max_size))


def hostile_text(
    canaries: tuple[str, ...] = (PLACEHOLDER_CANARY,), *, nul: bool = True, newlines: bool = True
) -> st.SearchStrategy[str]:
    """Hostile text on its own: a few fragments joined, arbitrary unicode, or a huge value."""
    text = st.text(min_size=1, max_size=30)
    if not nul:
        text = text.map(lambda value: value.replace("\x00", "") or "?")
    pieces = st.lists(st.one_of(fragments(canaries, nul=nul), text), min_size=1, max_size=4).map("".join)
    return st.one_of(pieces, text, long_values(canaries, nul=nul, newlines=newlines))


@st.composite
def corrupted(
    draw: st.DrawFn,
    valid: str | st.SearchStrategy[str],
    canaries: tuple[str, ...] = (PLACEHOLDER_CANARY,),
    *,
    nul: bool = True,
    newlines: bool = True,
) -> str:
    """``valid`` with hostile text inserted at a random position, a line break or control
    character at a separator or at the end, one character swapped for a look-alike, hostile text
    replacing a span or wrapping it, or hostile text alone."""
    base = draw(valid) if isinstance(valid, st.SearchStrategy) else valid
    piece = draw(
        st.one_of(
            fragments(canaries, nul=nul),
            fragments(canaries, nul=nul),
            long_values(canaries, nul=nul, newlines=newlines),
        )
    )
    how = draw(st.sampled_from(_HOW))
    start = draw(st.integers(min_value=0, max_value=len(base)))
    if how == "boundary":
        spots = [i for i, char in enumerate(base) if char in _SEPARATORS] + [0, len(base)]
        spot = draw(st.sampled_from(sorted(set(spots))))
        breaks = LINE_BREAKS + WHITESPACE + (CONTROL if nul else tuple(c for c in CONTROL if c != "\x00"))
        return base[:spot] + draw(st.sampled_from(breaks)) + base[spot:]
    if how == "swap" and base:
        spot = min(start, len(base) - 1)
        char = base[spot]
        kind = "digit" if char.isdigit() else "letter" if char.isalpha() else char
        swaps = _SWAPS.get(kind, LOOKALIKES)
        return base[:spot] + draw(st.sampled_from(swaps)) + base[spot + 1 :]
    if how == "insert":
        return base[:start] + piece + base[start:]
    if how == "replace":
        end = draw(st.integers(min_value=start, max_value=len(base)))
        return base[:start] + piece + base[end:]
    if how == "wrap":
        before, after = draw(st.sampled_from(WHITESPACE)), draw(st.sampled_from(("", *WHITESPACE)))
        return before + base + after
    if how == "append":
        return base + piece
    if how == "prepend":
        return piece + base
    return draw(hostile_text(canaries, nul=nul, newlines=newlines))
