"""GS1 identifiers in EPCIS events, brought to the one form the CBV event hash ID hashes.

CBV 2.0 §8.9 (the event hash ID's canonicalisation, rules 17-18): an EPC URI (``urn:epc:id:``), EPC
class URI (``urn:epc:class:``) or EPC pattern URI (``urn:epc:idpat:``) becomes its canonical GS1 Digital
Link URI on ``https://id.gs1.org``, and a GS1 Digital Link URI is *constrained*: canonical domain, no
query string, short key names replaced by application identifiers, only the finest level of
identification kept (a serial drops the lot, a CPV is dropped).

The translation of each EPC scheme follows the GS1 Tag Data Standard (TDS 2.0 §6-7: company prefix,
reference, check digit); the character sets and the set of accepted final forms follow GS1's reference
implementation (``epcis-event-hash-generator``, ``dl_normaliser.py``), which is the oracle of the
tests: an input it does not turn into a Digital Link is left alone here too, so both hash it verbatim.

Pure: strings in, string or ``None`` out.
"""

from __future__ import annotations

import re

# TDS "GS1 AI encodable character set 82" as it may appear inside an EPC URI (%-escapes allowed).
_X = (
    r"(?:%2[125-9A-Fa-f]|%3[0-9A-Fa-f]|%4[1-9A-Fa-f]|%5[0-9AaFf]|%6[1-9A-Fa-f]|%7[0-9Aa]"
    r"|[!')(*+,.0-9:;=A-Za-z_-])"
)
# Character set 39 (component/part references: CPI).
_CPI = r"(?:%2[3dfDF]|%3[0-9]|%4[1-9A-Fa-f]|%5[0-9Aa]|[0-9A-Z-])"
# Characters a constrained Digital Link keeps in its values (the reference's final check).
_DLC = r"[\x22\x27\x2D\x2E\x30-\x39\x3B-\x3F\x41-\x5A\x5F\x61-\x7A]"


def _split(total: int) -> str:
    """Company prefix (6-12 digits) '.' reference, ``total`` digits in all, as one regex alternation."""
    return "(?:" + "|".join(rf"\d{{{cp}}}\.\d{{{total - cp}}}" for cp in range(6, 13)) + ")"


def _split_dd(total: int) -> str:
    """As :func:`_split`, but a 12-digit company prefix is followed by two dots (the reference's form)."""
    return "(?:" + "|".join(rf"\d{{{cp}}}\.\d{{{total - cp}}}" for cp in range(6, 12)) + r"|\d{12}\.\.)"


def _var(lengths: int) -> str:
    """Company prefix '.' a character-82 reference of at most ``lengths - len(prefix)`` characters."""
    return "(?:" + "|".join(rf"\d{{{cp}}}\.{_X}{{1,{lengths - cp}}}" for cp in range(6, 13)) + ")"


def _check_digit(digits: str) -> str:
    """GS1 General Specifications §7.9.1: weights 3,1,3,... from the right; the digit to the next ten."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(digits)))
    return str((10 - total % 10) % 10)


def _percent(text: str) -> str:
    """GS1 Digital Link Table 7-1: the characters a path value must escape (EPC URIs forbid the rest)."""
    return (
        text.replace("!", "%21")
        .replace("(", "%28")
        .replace(")", "%29")
        .replace("*", "%2A")
        .replace("+", "%2B")
        .replace(",", "%2C")
        .replace(":", "%3A")
    )


def _gtin(cp: str, item: str) -> str:
    """GTIN-14 from a company prefix and an indicator-plus-item reference (TDS §6.3.1)."""
    raw = item[:1] + cp + item[1:]
    return raw + _check_digit(raw)


_DL = "https://id.gs1.org/"

# (regex of the part after the scheme's URN prefix, translation of the '.'-separated fields).
_EPC: dict[str, tuple[re.Pattern[str], str]] = {}


def _epc(prefix: str, body: str) -> None:
    _EPC[prefix] = (re.compile(body + r"\Z"), prefix)


_epc("urn:epc:id:sgtin:", rf"{_split(13)}\.{_X}{{1,20}}")
_epc("urn:epc:id:sscc:", _split(17))
_epc("urn:epc:id:sgln:", rf"{_split(12)}\.{_X}{{1,20}}")
_epc("urn:epc:id:grai:", rf"{_split_dd(12)}\.{_X}{{1,16}}")
_epc("urn:epc:id:giai:", _var(30))
_epc("urn:epc:id:gsrn:", _split(17))
_epc("urn:epc:id:gsrnp:", _split(17))
_epc("urn:epc:id:gdti:", rf"{_split_dd(12)}{_X}{{1,20}}")
_epc(
    "urn:epc:id:cpi:",
    "(?:" + "|".join(rf"\d{{{cp}}}\.{_CPI}{{1,{30 - cp}}}" for cp in range(6, 13)) + r")\.\d{1,12}",
)
_epc("urn:epc:id:sgcn:", rf"{_split(12)}\.\d{{1,12}}")
_epc("urn:epc:id:ginc:", _var(30))
_epc("urn:epc:id:gsin:", _split(16))
_epc("urn:epc:id:itip:", rf"{_split(13)}\.\d{{2}}\.\d{{2}}\.{_X}{{1,20}}")
_epc("urn:epc:id:upui:", rf"{_split(13)}\.{_X}{{1,28}}")
_epc("urn:epc:id:pgln:", _split(12))
_epc("urn:epc:class:lgtin:", rf"{_split(13)}\.{_X}{{1,20}}")
_epc("urn:epc:idpat:sgtin:", rf"{_split(13)}\.\*")
_epc("urn:epc:idpat:grai:", rf"{_split_dd(12)}\.\*")
_epc("urn:epc:idpat:gdti:", rf"{_split_dd(12)}\.\*")
_epc("urn:epc:idpat:sgcn:", rf"{_split_dd(12)}\.\*")
_epc(
    "urn:epc:idpat:cpi:",
    "(?:" + "|".join(rf"\d{{{cp}}}\.{_CPI}{{1,{30 - cp}}}" for cp in range(6, 13)) + r")\.\*",
)
_epc("urn:epc:idpat:itip:", rf"{_split(13)}\.\d{{2}}\.\d{{2}}\.\*")
_epc("urn:epc:idpat:upui:", rf"{_split(13)}\.\*")


def _from_epc(scheme: str, body: str) -> str:  # noqa: PLR0911 (one return per TDS scheme family)
    """The Digital Link of an EPC URI body that matched its scheme's pattern (TDS §6-7)."""
    cp, _, rest = body.partition(".")
    kind = scheme.rsplit(":", 2)[-2]
    pattern = scheme.startswith("urn:epc:idpat:")
    if kind in ("sgtin", "upui", "lgtin"):
        item, serial = rest[: 13 - len(cp)], rest[13 - len(cp) + 1 :]
        base = _DL + "01/" + _gtin(cp, item)
        if pattern:
            return base
        ai = {"sgtin": "21", "upui": "235", "lgtin": "10"}[kind]
        return f"{base}/{ai}/{_percent(serial)}"
    if kind == "sscc":
        raw = rest[:1] + cp + rest[1:]
        return _DL + "00/" + raw + _check_digit(raw)
    if kind == "sgln":
        raw = cp + rest[: 12 - len(cp)]
        ext = rest[12 - len(cp) + 1 :]
        gln = _DL + "414/" + raw + _check_digit(raw)
        return gln if ext == "0" else f"{gln}/254/{_percent(ext)}"
    if kind == "grai":
        raw = "0" + cp + rest[: 12 - len(cp)]
        serial = "" if pattern else rest[12 - len(cp) + 1 :]
        return _DL + "8003/" + raw + _check_digit(raw) + _percent(serial)
    if kind in ("giai", "ginc"):
        return _DL + ("8004/" if kind == "giai" else "401/") + cp + _percent(rest)
    if kind in ("gsrn", "gsrnp", "gsin", "pgln"):
        raw = cp + rest
        ai = {"gsrn": "8018", "gsrnp": "8017", "gsin": "402", "pgln": "417"}[kind]
        return _DL + ai + "/" + raw + _check_digit(raw)
    if kind in ("gdti", "sgcn"):
        raw = cp + rest[: 12 - len(cp)]
        serial = "" if pattern else rest[12 - len(cp) + 1 :]
        if kind == "gdti":
            serial = _percent(serial)
        return _DL + ("253/" if kind == "gdti" else "255/") + raw + _check_digit(raw) + serial
    if kind == "cpi":
        ref, _, serial = rest.rpartition(".")
        base = _DL + "8010/" + _percent(cp + ref)
        return base if pattern else f"{base}/8011/{serial}"
    # itip: indicator+item '.' piece '.' total '.' serial
    item = rest[: 13 - len(cp)]
    fields = rest[13 - len(cp) + 1 :].split(".", 2)
    base = _DL + "8006/" + _gtin(cp, item) + fields[0] + fields[1]
    return base if pattern else f"{base}/21/{_percent(fields[2])}"


# Primary keys a Digital Link path may start with, long names first replaced by their AI.
_KEYS = (
    "01|gtin|8006|itip|8010|cpid|414|gln|417|party|8017|gsrnp|8018|gsrn|255|gcn|00|sscc|253|gdti|401|ginc"
    "|402|gsin|8003|grai|8004|giai"
)
_DL_SHAPE = re.compile(
    r"https?:(//(([^/?#]*)@)?([^/?#:]*)(:([^/?#]*))?)?"
    rf"((([^?#]*)(/({_KEYS})/)(\d{{4}}[^/]+)(/[^/]+/[^/]+)?/?(\?([^?\n]*))?(#([^\n]*))?)|(/[A-Za-z_-]{{10}}$))"
)
# A necessary condition for _DL_SHAPE, cheap to test first: _DL_SHAPE backtracks for tens of
# microseconds over a long URI that is no Digital Link (every edgeroot identifier URI).
_DL_QUICK = re.compile(rf"/(?:{_KEYS})/\d{{4}}|/[A-Za-z_-]{{10}}$")
_SHORT_NAMES = (
    ("/gtin/", "/01/"),
    ("/itip/", "/8006/"),
    ("/cpid/", "/8010/"),
    ("/gln/", "/414/"),
    ("/party/", "/417/"),
    ("/gsrnp/", "/8017/"),
    ("/gsrn/", "/8018/"),
    ("/gcn/", "/255/"),
    ("/sscc/", "/00/"),
    ("/gdti/", "/253/"),
    ("/ginc/", "/401/"),
    ("/gsin/", "/402/"),
    ("/grai/", "/8003/"),
    ("/giai/", "/8004/"),
    ("/cpv/", "/22/"),
    ("/lot/", "/10/"),
    ("/ser/", "/21/"),
)
_CANONICAL_HOST = re.compile(
    r"https://id.gs1.org/(01|8006|8010|414|417|8017|8018|255|00|253|401|402|8003|8004)/(\d{4}[^/]+)"
    r"(/[^/]+/[^/]+)?/?(\?([^?\n]*))?(#([^\n]*))?|(/[A-Za-z_-]{10}$)"
)
_REHOST_ORDER = (
    "/00/",
    "/01/",
    "/253/",
    "/255/",
    "/401/",
    "/402/",
    "/414/",
    "/417/",
    "/8003/",
    "/8004/",
    "/8006/",
    "/8010/",
    "/8017/",
    "/8018/",
)
_CPV_ONLY = re.compile(rf"https://id.gs1.org/(8006/\d{{18}}|01/\d{{14}})/22/({_DLC}{{0,20}})$")
_CPV_THEN = re.compile(rf"https://id.gs1.org/(8006/\d{{18}}|01/\d{{14}})/22/([\x2F]|{_DLC}){{0,20}}$")
_LOT_AND_SERIAL = re.compile(
    rf"https://id.gs1.org/(8006/\d{{18}}|01/\d{{14}})/10/{_DLC}{{0,20}}/21/{_DLC}{{0,20}}$"
)
# The constrained canonical forms CBV 2.0 §8.9 rule 18 keeps (00, 01, 01+21, 01+10, 01+235, 253, 255,
# 401, 402, 414, 414+254, 417, 8003, 8004, 8006, 8006+21, 8006+10, 8010, 8010+8011, 8017, 8018).
_FINAL = re.compile(
    "|".join(
        (
            r"https://id.gs1.org/00/\d{18}",
            rf"https://id.gs1.org/01/\d{{14}}/21/{_DLC}{{0,20}}",
            rf"https://id.gs1.org/01/\d{{14}}/10/{_DLC}{{0,20}}",
            r"https://id.gs1.org/01/\d{14}",
            rf"https://id.gs1.org/01/\d{{14}}/235/{_DLC}{{0,28}}",
            rf"https://id.gs1.org/253/\d{{13}}{_DLC}{{0,17}}",
            r"https://id.gs1.org/255/\d{13}\d{0,12}",
            rf"https://id.gs1.org/401/{_DLC}{{0,30}}",
            r"https://id.gs1.org/402/\d{17}",
            r"https://id.gs1.org/414/\d{13}",
            rf"https://id.gs1.org/414/\d{{13}}/254/{_DLC}{{0,20}}",
            r"https://id.gs1.org/417/\d{13}",
            rf"https://id.gs1.org/8003/\d{{14}}{_DLC}{{0,16}}",
            rf"https://id.gs1.org/8004/{_DLC}{{0,30}}",
            rf"https://id.gs1.org/8006/\d{{18}}/21/{_DLC}{{0,20}}",
            rf"https://id.gs1.org/8006/\d{{18}}/10/{_DLC}{{0,20}}",
            r"https://id.gs1.org/8006/\d{18}",
            r"https://id.gs1.org/8010/[\x23\x2D\x2F\x30-\x39\x41-\x5A]{0,30}/8011/\d{0,12}",
            r"https://id.gs1.org/8010/[\x23\x2D\x2F\x30-\x39\x41-\x5A]{0,30}",
            r"https://id.gs1.org/8017/\d{18}",
            r"https://id.gs1.org/8018/\d{18}",
        )
    )
)


def _constrain_digital_link(uri: str) -> str | None:
    """A GS1 Digital Link URI in constrained canonical form, or ``None`` if ``uri`` is not one."""
    if not uri.startswith("http") or _DL_QUICK.search(uri) is None or _DL_SHAPE.match(uri) is None:
        return None
    if "?" in uri:
        uri = uri[: uri.index("?")]
    for short, ai in _SHORT_NAMES:
        uri = uri.replace(short, ai)
    if _CANONICAL_HOST.match(uri) is None:
        for key in _REHOST_ORDER:
            if key in uri:
                uri = "https://id.gs1.org" + uri[uri.find(key) :]
                break
    if re.match(r"https://id.gs1.org/01/\d{14}", uri) is None:
        if re.match(r"https://id.gs1.org/01/\d{13}", uri) is not None:
            uri = uri.replace("/01/", "/01/0")
        elif re.match(r"https://id.gs1.org/01/\d{12}", uri) is not None:
            uri = uri.replace("/01/", "/01/00")
        elif re.match(r"https://id.gs1.org/01/\d{8}", uri) is not None:
            uri = uri.replace("/01/", "/01/000000")
    after_cpv = uri[uri.find("/22/") + 4 :]
    if _CPV_ONLY.match(uri) is not None:
        uri = uri[: uri.find("/22/")] + after_cpv[after_cpv.find("/") : -1]
    if _CPV_THEN.match(uri) is not None:
        uri = uri[: uri.find("/22/")] + after_cpv[after_cpv.find("/") :]
    if _LOT_AND_SERIAL.match(uri) is not None:
        after_lot = uri[uri.find("/10/") + 4 :]
        uri = uri[: uri.find("/10/")] + after_lot[after_lot.find("/") :]
    if _FINAL.fullmatch(uri) is None:
        return None
    return uri


def canonical_digital_link(uri: str) -> str | None:
    """The constrained canonical GS1 Digital Link URI for a GS1 identifier in any of its URI forms.

    ``None`` when ``uri`` is not a GS1 identifier the event hash ID canonicalises (then it is hashed as
    written). Every GS1 form contains a ``.`` (a company prefix separator or the domain's dot).
    """
    if "." not in uri:
        return None
    if uri.startswith("urn:epc:"):
        parts = uri.split(":", 4)
        if len(parts) < 5:
            return None
        body = parts[4]
        entry = _EPC.get(":".join(parts[:4]) + ":")
        if entry is None or entry[0].match(body) is None:
            return None
        return _from_epc(entry[1], body)
    return _constrain_digital_link(uri)
