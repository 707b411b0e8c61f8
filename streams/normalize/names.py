"""Personal names as Kota Serang's agencies type them, brought to one canonical upper-case form.

The steps, in order (each one a small function below):

1. Upper case, Unicode NFKC, apostrophes inside words dropped (``Ma'ruf`` → ``MARUF``), every other
   punctuation mark a separator. Digits are dropped: names may not carry them (Permendagri 73/2022).
2. Titles are split off and kept: religious and courtesy titles before the name (``H.``, ``Hj.``,
   ``KH.``, ``Ust.``, ``Ny.``, ``By.`` ...), academic ones before it (``Dr.``, ``Ir.``, ``Drs.``) and
   degrees after it, after a comma or at the end (``S.Pd.``, ``S.H.``, ``M.Pd.`` ...).
3. The Muhammad family of spellings and its abbreviations become ``MUHAMMAD``.
4. Dutch-era spellings become modern ones (:func:`modern_token`).

Nicknames are a different name, not a different spelling, so they never change :attr:`full`; the
unambiguous ones are expanded in :attr:`NormalizedName.formal_tokens`, which blocking uses.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

MUHAMMAD = "MUHAMMAD"

# Spellings of Muhammad: M, then u/o/oe, then h/ch/kh (or none), a, one or two m, a or e, d or t.
# Covers Muhammad, Muhamad, Mohamad, Mohammad, Mochamad, Mochammad, Moehamad, Mukhamad, Muchammad,
# Muchamad, Mohamed, Mohammed, Muhammat ... and nothing else that is a name (Mahmud starts M-a).
_MUHAMMAD_SPELLING = re.compile(r"M(?:OE|U|O)(?:KH|CH|H)?AM{1,2}[AE][DT]")
# Abbreviations that only ever stand for Muhammad, wherever they appear.
_MUHAMMAD_ABBREVIATIONS = frozenset({"MOH", "MOCH", "MOHD", "MUCH", "MUH", "MHD"})
# Abbreviations that stand for a name only as the first word of a longer name: a lone "M" or
# "TB" could be an initial, but "M. Rizki" and "Tb. Ahmad" are how Muhammad and Tubagus are written.
_FIRST_WORD_ABBREVIATIONS: dict[str, str] = {"M": MUHAMMAD, "TB": "TUBAGUS"}
# Abbreviations that stand for one word wherever they appear.
_WORD_ABBREVIATIONS: dict[str, str] = {"ABD": "ABDUL"}

# Titles written before the name, by their letters without dots, with the form kept in `titles`.
# "Neng" (Sundanese "miss") is a courtesy word clinics put before a woman's name; "By. Ny." marks a
# newborn registered under its mother's name ("baby of Mrs."), which the matcher must know about.
LEADING_TITLES: dict[str, str] = {
    "H": "H.", "HAJI": "H.", "HJ": "Hj.", "HJH": "Hj.", "HAJJAH": "Hj.", "HAJAH": "Hj.",
    "KH": "KH.", "KYAI": "KH.", "KIAI": "KH.", "UST": "Ust.", "USTADZ": "Ust.", "USTAD": "Ust.",
    "USTAZ": "Ust.", "USTADZAH": "Ustz.", "USTAZAH": "Ustz.", "DR": "Dr.", "DRS": "Drs.", "DRA": "Dra.",
    "IR": "Ir.", "PROF": "Prof.", "DRG": "drg.", "NY": "Ny.", "TN": "Tn.", "NN": "Nn.", "BY": "By.",
    "NENG": "Neng",
}
NEWBORN_TITLE = "By."

# Academic degrees written after the name, by their letters without dots.
DEGREES: dict[str, str] = {
    "SPD": "S.Pd.", "SPDI": "S.Pd.I.", "SH": "S.H.", "SHI": "S.H.I.", "SKOM": "S.Kom.", "SE": "S.E.",
    "SEI": "S.E.I.", "ST": "S.T.", "SSOS": "S.Sos.", "SSOSI": "S.Sos.I.", "SAG": "S.Ag.", "SSI": "S.Si.",
    "SIP": "S.IP.", "SKEP": "S.Kep.", "SKM": "S.K.M.", "SKED": "S.Ked.", "SFARM": "S.Farm.", "SPSI": "S.Psi.",
    "SP": "S.P.", "SS": "S.S.", "SST": "S.ST.", "STR": "S.Tr.", "SAK": "S.Ak.", "SHUM": "S.Hum.",
    "SIKOM": "S.I.Kom.", "AMD": "A.Md.", "AMDKEP": "A.Md.Kep.", "AMDKEB": "A.Md.Keb.", "AMK": "A.M.K.",
    "AMKEB": "Am.Keb.", "MPD": "M.Pd.", "MPDI": "M.Pd.I.", "MM": "M.M.", "MSI": "M.Si.", "MH": "M.H.",
    "MKOM": "M.Kom.", "MAG": "M.Ag.", "MT": "M.T.", "MKES": "M.Kes.", "MAP": "M.A.P.", "ME": "M.E.",
    "MA": "M.A.", "LC": "Lc.", "GR": "Gr.", "DR": "Dr.", "PHD": "Ph.D.", "MBA": "MBA",
}
# Degrees only accepted after a comma: at the end of a name without one, "MA", "SS", "ME" and "SP"
# are too easily initials, and "Dr." is written before a name, not after it.
_COMMA_ONLY_DEGREES = frozenset({"MA", "SS", "ME", "SP", "DR"})
_LONGEST_TITLE = 3  # pieces: "A.Md.Kep." is the longest, three pieces

# Women's names and men's names start with these words so often that they say little about who
# someone is ("Siti Aminah" is known as Aminah); the given name is the first word after them.
LOW_EVIDENCE_LEADING = frozenset({MUHAMMAD, "SITI", "NUR"})

# Nicknames people give at a clinic counter, expanded only where one registered name stands behind
# them. Left out on purpose: Asep (a given name in its own right and a Sundanese word for "boy"),
# Ujang (also a registered name), Iis, Wawan, Mamat, Nur and Abdul (all registered names too),
# Imah (Fatimah or Halimah), Maman (Abdurrahman, Rahman or Sulaeman), Yati (Nurhayati, Suryati,
# Mulyati ...), Eni (Rohaeni or a given name), Kiki (Rizki or a woman's given name), Minah (Aminah
# or Suminah), Uus (Usman or Yusuf), and Neng, a courtesy word handled as a title.
NICKNAMES: dict[str, str] = {
    "UCUP": "YUSUF",
    "DULAH": "ABDULLAH",
    "MAIL": "ISMAIL",
    "LEMAN": "SULAIMAN",
    "DAYAT": "HIDAYAT",
    "IJAH": "KHADIJAH",
    "ICAH": "AISYAH",
    "IYAM": "MARYAM",
}


@dataclass(frozen=True, slots=True)
class NormalizedName:
    """A name in canonical form; ``full`` is what to compare, ``titles`` what was split off."""

    original: str
    full: str  # canonical tokens joined by single spaces, e.g. "MUHAMMAD YUSUF"
    tokens: tuple[str, ...]
    given: str  # first token after MUHAMMAD/SITI/NUR (or the first token), "" for an empty name
    others: tuple[str, ...]  # the tokens except that given one, in order
    formal_tokens: tuple[str, ...]  # tokens with unambiguous nicknames replaced (UCUP → YUSUF)
    titles: tuple[str, ...]  # e.g. ("Hj.", "S.Pd."): leading titles first, then degrees

    @property
    def is_empty(self) -> bool:
        """Whether no name word was left (only titles, punctuation or nothing)."""
        return not self.tokens

    @property
    def is_newborn_placeholder(self) -> bool:
        """Whether this is "By. Ny. <mother>": a newborn filed under its mother's name."""
        return NEWBORN_TITLE in self.titles


# --- step 1: pieces -------------------------------------------------------------------------------

_APOSTROPHE_IN_WORD = re.compile(r"(?<=[A-Z])['’`‘](?=[A-Z])")
_PIECE = re.compile(r"[A-Z]+\.?")


@dataclass(frozen=True, slots=True)
class _Piece:
    letters: str
    dotted: bool  # followed by a dot: "S." in "S.Pd." (multi-piece titles need their inner dots)


def _pieces(text: str) -> list[_Piece]:
    """Letter runs of ``text`` (already upper case), each noting whether a dot followed it."""
    return [_Piece(m.group().rstrip("."), m.group().endswith(".")) for m in _PIECE.finditer(text)]


def _clean(text: str) -> str:
    """Upper case and NFKC, with apostrophes inside words removed (they split no words)."""
    return _APOSTROPHE_IN_WORD.sub("", unicodedata.normalize("NFKC", text).upper())


# --- step 2: titles -------------------------------------------------------------------------------


def _title_at(pieces: list[_Piece], start: int, count: int, table: dict[str, str]) -> str | None:
    """The title formed by ``count`` pieces from ``start``, if the table knows it.

    Several pieces only join when the inner ones carry dots ("S.Pd", "K.H."), so two words that
    happen to spell a title together are never merged.
    """
    group = pieces[start:start + count]
    if len(group) != count or any(not p.dotted for p in group[:-1]):
        return None
    return table.get("".join(p.letters for p in group))


def _split_leading_titles(pieces: list[_Piece]) -> tuple[list[str], list[_Piece]]:
    """Titles before the name, longest first, always leaving at least one name piece."""
    titles: list[str] = []
    while len(pieces) > 1:
        for count in range(min(_LONGEST_TITLE, len(pieces) - 1), 0, -1):
            title = _title_at(pieces, 0, count, LEADING_TITLES)
            if title:
                titles.append(title)
                pieces = pieces[count:]
                break
        else:
            break
    return titles, pieces


def _split_trailing_degrees(pieces: list[_Piece]) -> tuple[list[_Piece], list[str]]:
    """Degrees written at the end of the name without a comma ("SITI AMINAH S.PD")."""
    degrees: list[str] = []
    while len(pieces) > 1:
        for count in range(min(_LONGEST_TITLE, len(pieces) - 1), 0, -1):
            start = len(pieces) - count
            letters = "".join(p.letters for p in pieces[start:])
            degree = _title_at(pieces, start, count, DEGREES)
            if degree and letters not in _COMMA_ONLY_DEGREES:
                degrees.insert(0, degree)
                pieces = pieces[:start]
                break
        else:
            break
    return pieces, degrees


def _split_degree_list(pieces: list[_Piece]) -> tuple[list[str], list[_Piece]]:
    """The part after the comma: its degrees, and any pieces that are no degree (kept as name)."""
    degrees: list[str] = []
    rest: list[_Piece] = []
    i = 0
    while i < len(pieces):
        for count in range(min(_LONGEST_TITLE, len(pieces) - i), 0, -1):
            degree = _title_at(pieces, i, count, DEGREES)
            if degree:
                degrees.append(degree)
                i += count
                break
        else:
            rest.append(pieces[i])
            i += 1
    return degrees, rest


# --- steps 3 and 4: words -------------------------------------------------------------------------

# One left-to-right pass over the old digraphs, so a J that DJ became is never read again as J→Y.
_OLD_SPELLING_UNITS = re.compile("OE|DJ|TJ|SJ|NJ|CH|KH|HJ|LJ|J")
_OLD_SPELLING_MARKERS = re.compile("OE|DJ|TJ|SJ|^NJ")


def is_old_spelling(token: str) -> bool:
    """Whether an upper-case word shows a pre-1972 spelling: oe, dj, tj, sj, or a leading nj.

    Modern Indonesian writes none of these, so a word with one of them was spelled the Dutch way
    throughout, and its plain J is the old letter for Y (Joesoef is Yusuf, Tjahjo is Cahyo).
    """
    return bool(_OLD_SPELLING_MARKERS.search(token))


def modern_token(token: str) -> str:
    """The modern spelling of one upper-case name word.

    Rules, each one a real spelling habit of names:

    - oe → U, dj → J, tj → C, sj → SY (Soewandi and van Ophuijsen spellings): Djoko → JOKO.
    - In a word with one of those marks (:func:`is_old_spelling`), j → Y and nj → NY: Joesoef →
      YUSUF, Tjahjo → CAHYO, Soenjoto → SUNYOTO. A leading nj is always NY (no modern word starts so).
      In a word without them J stays: Joko is modern, and Hidajat cannot be told from a modern name
      by spelling alone (the phonetic key, :func:`phonetic_key`, treats J and Y as one sound).
    - hj → HY and lj → LY everywhere: modern names have no such cluster (Wahju → WAHYU).
    - ch and kh at the start of a word → KH (Chairul → KHAIRUL), except Chandr-, where ch is C
      (Chandra → CANDRA); inside a word both → H (Machmud → MAHMUD, Achmad and Akhmad → AHMAD,
      Muchlis and Mukhlis → MUHLIS). The canonical form joins spellings; it is not always the most
      common one.
    """
    if token.startswith("CHANDR"):
        token = "C" + token[2:]
    old = is_old_spelling(token)

    def replace(match: re.Match[str]) -> str:
        unit, at_start = match.group(), match.start() == 0
        if unit == "OE":
            return "U"
        if unit in ("DJ", "TJ"):
            return "J" if unit == "DJ" else "C"
        if unit == "SJ":
            return "SY"
        if unit == "NJ":
            return "NY" if old or at_start else "NJ"
        if unit in ("CH", "KH"):
            return "KH" if at_start else "H"
        if unit in ("HJ", "LJ"):
            return unit[0] + "Y"
        return "Y" if old else "J"

    return _OLD_SPELLING_UNITS.sub(replace, token)


def canonical_token(token: str, *, first: bool, followed: bool) -> str:
    """One name word in canonical form: abbreviations expanded, Muhammad unified, spelling modern.

    ``first``: the word is the first of the name; ``followed``: other words come after it.
    """
    if first and followed and token in _FIRST_WORD_ABBREVIATIONS:
        return _FIRST_WORD_ABBREVIATIONS[token]
    if token in _WORD_ABBREVIATIONS:
        return _WORD_ABBREVIATIONS[token]
    modern = modern_token(token)
    # Checked after modernising too: an old spelling of a variant (Moetjhammad) is one as well.
    if token in _MUHAMMAD_ABBREVIATIONS or _MUHAMMAD_SPELLING.fullmatch(token) or _MUHAMMAD_SPELLING.fullmatch(modern):
        return MUHAMMAD
    return modern


def given_token(tokens: tuple[str, ...]) -> str:
    """The word that names the person: the first after MUHAMMAD/SITI/NUR, or the first at all."""
    for token in tokens:
        if token not in LOW_EVIDENCE_LEADING:
            return token
    return tokens[0] if tokens else ""


# --- the whole name -------------------------------------------------------------------------------


def normalize_name(text: str | None) -> NormalizedName:
    """Canonical form of a personal name as any agency typed it.

    ``"Hj. Siti Aminah, S.Pd."``, ``"SITI AMINAH"`` and ``"HJ SITI AMINAH SPD"`` all give ``full``
    ``"SITI AMINAH"``; ``"M. Joesoef"`` and ``"MOCHAMAD YUSUF"`` give ``"MUHAMMAD YUSUF"``.
    """
    original = text or ""
    cleaned = _clean(original)
    name_text, _, degree_text = cleaned.partition(",")
    leading, pieces = _split_leading_titles(_pieces(name_text))
    pieces, trailing = _split_trailing_degrees(pieces)
    after_comma, kept = _split_degree_list(_pieces(degree_text))
    words = [p.letters for p in pieces + kept]
    tokens = tuple(
        canonical_token(word, first=i == 0, followed=i < len(words) - 1) for i, word in enumerate(words)
    )
    given = given_token(tokens)
    others = list(tokens)
    if given:
        others.remove(given)
    return NormalizedName(
        original=original,
        full=" ".join(tokens),
        tokens=tokens,
        given=given,
        others=tuple(others),
        formal_tokens=tuple(NICKNAMES.get(t, t) for t in tokens),
        titles=tuple(leading + trailing + after_comma),
    )


# --- blocking keys --------------------------------------------------------------------------------

# Sounds Indonesian spellings write in more than one way, folded before the key is taken:
# KH/H (Akhmad/Ahmad), DH/D (Ramadhan/Ramadan), TH/T (Fathur/Fatur), SY/SH/S (Syaiful/Saiful,
# Sholihah/Solihah), PH/F/V/P (Saepul/Saiful), Z/J/Y (Zaenal/Jaenal, Yusuf/Jusuf), Q/K (Rizqi/Rizki).
_KEY_DIGRAPHS = (("KH", "H"), ("DH", "D"), ("TH", "T"), ("SY", "S"), ("SH", "S"), ("PH", "P"))
_KEY_LETTERS = str.maketrans({"F": "P", "V": "P", "Z": "J", "Y": "J", "Q": "K", "X": "K"})
_KEY_DROPPED = frozenset("AEIOUH")
KEY_LENGTH = 4


def phonetic_key(token: str) -> str:
    """A short key for one canonical word that spelling variants of the same name share.

    The first letter, then the consonants with H dropped and repeats collapsed, after folding the
    sounds above; a final Y counts as I (Rizky = Rizki). At most :data:`KEY_LENGTH` letters:
    YUSUF and JUSUF → "JSP", ZAENAL and ZAINAL → "JNL", SAIFUL, SAEPUL and SYAIFUL → "SPL".
    """
    word = "".join(ch for ch in token.upper() if "A" <= ch <= "Z")
    if not word:
        return ""
    if word.endswith("Y") and len(word) > 1:
        word = word[:-1] + "I"
    for digraph, sound in _KEY_DIGRAPHS:
        word = word.replace(digraph, sound)
    word = word.translate(_KEY_LETTERS)
    letters = [word[0]] + [ch for ch in word[1:] if ch not in _KEY_DROPPED]
    collapsed = [ch for i, ch in enumerate(letters) if i == 0 or ch != letters[i - 1]]
    return "".join(collapsed)[:KEY_LENGTH]


def name_key(name: NormalizedName) -> str:
    """The blocking key of a name: the phonetic key of its given word, nicknames expanded.

    The given word skips MUHAMMAD, SITI and NUR, which start too many names to block on, so
    "Muhammad Yusuf", "M. Joesoef" and the nickname "Ucup" all share the key "JSP".
    """
    return phonetic_key(given_token(name.formal_tokens))
