"""Parser of EMIDEC clinical text files (``Case N006.txt``).

The files hold ``Field : Value`` lines (any order, blank lines allowed). They are not
UTF-8: bytes are cp1252 or mac_roman, and some separators carry a non-breaking space
(0xA0 in cp1252, 0xCA in mac_roman) before the colon; ``Killip Max:`` has no space.
Field names are matched after lower-casing and removing everything except letters,
digits and '+', so spacing and punctuation variants of a name are the same field.

Decoding: UTF-8 when the bytes are valid UTF-8; otherwise both cp1252 and mac_roman
are tried and the one under which more known field names parse, and parse as plain ASCII
apart from spaces, wins (ties go to cp1252, the more common encoding). That decides, e.g.,
whether 0xCA before a colon is mac_roman's non-breaking space or cp1252's 'Ê', and
whether 0xA0 is cp1252's non-breaking space or mac_roman's '†'.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from attri_ssc.errors import DataError

# canonical key -> (printed name, kind); kinds: "float", "int", "binary", "sex", "code"
FIELDS: dict[str, tuple[str, str]] = {
    "gap_between_slices": ("Gap between slices", "float"),
    "sex": ("Sex", "sex"),
    "age": ("Age", "float"),
    "tobacco": ("Tobacco", "code"),
    "overweight": ("Overweight", "binary"),
    "arterial_hypertension": ("Arterial hypertension", "binary"),
    "diabetes": ("Diabetes", "binary"),
    "familial_history": ("Familial history of coronary artery disease", "binary"),
    "ecg_st": ("ECG (ST +)", "binary"),
    "troponin": ("Troponin", "float"),
    "killip_max": ("Killip Max", "int"),
    "fevg": ("FEVG", "float"),
    "ntprobnp": ("NTProBNP", "float"),
}


def _squash(label: str) -> str:
    """Lower-case and keep only letters, digits and '+': 'Killip Max ' -> 'killipmax'."""
    return re.sub(r"[^a-z0-9+]", "", label.lower())


_ALIASES: dict[str, str] = {_squash(printed): key for key, (printed, _) in FIELDS.items()}
_ALIASES.update(
    {
        "gbs": "gap_between_slices",
        "gapbetweenslice": "gap_between_slices",
        "familialhistory": "familial_history",
        "ecgst+": "ecg_st",
        "ecgst": "ecg_st",
        "ecg": "ecg_st",
        "killip": "killip_max",
        "ntprobnp": "ntprobnp",
        "ntbnp": "ntprobnp",
        "arterialhypertention": "arterial_hypertension",
    }
)

_YES = {"1", "y", "yes", "o", "oui", "true"}
_NO = {"0", "n", "no", "non", "false"}


@dataclass(frozen=True)
class ClinicalRecord:
    """Parsed clinical file of one case.

    Attributes:
        gap_between_slices: as written in the file (mm).
        sex: 'M' or 'F'.
        age: years.
        tobacco: code 1/2/3 as written (meaning undocumented; categorical).
        overweight, arterial_hypertension, diabetes, familial_history, ecg_st: 0/1.
        troponin, ntprobnp: as written (units undocumented).
        killip_max: 1-4.
        fevg: ejection fraction (%).
        source: the file parsed.
        encoding: the encoding the bytes were decoded with.
        extra: fields not in :data:`FIELDS`, verbatim.
    """

    gap_between_slices: float
    sex: str
    age: float
    tobacco: int
    overweight: int
    arterial_hypertension: int
    diabetes: int
    familial_history: int
    ecg_st: int
    troponin: float
    killip_max: int
    fevg: float
    ntprobnp: float
    source: str = ""
    encoding: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def attribute_values(self) -> dict[str, float]:
        """Numeric values of the clinical attributes (sex: 1 male, 0 female)."""
        return {
            "fevg": float(self.fevg),
            "age": float(self.age),
            "sex": 1.0 if self.sex == "M" else 0.0,
            "tobacco": float(self.tobacco),
            "overweight": float(self.overweight),
            "arterial_hypertension": float(self.arterial_hypertension),
            "diabetes": float(self.diabetes),
            "familial_history": float(self.familial_history),
            "ecg_st": float(self.ecg_st),
            "troponin": float(self.troponin),
            "killip_max": float(self.killip_max),
            "ntprobnp": float(self.ntprobnp),
        }

    def to_dict(self) -> dict:
        return asdict(self)


def decode_bytes(raw: bytes) -> tuple[str, str]:
    """Decode a clinical file's bytes; returns (text, encoding). See module docstring."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 with a byte-order mark (e.g. Notepad's "Unicode")
        try:
            return raw.decode("utf-16"), "utf-16"
        except UnicodeDecodeError:
            pass
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    best: tuple[int, int, str, str] | None = None
    for rank, enc in enumerate(("cp1252", "mac_roman")):
        try:
            text = raw.decode(enc)
        except UnicodeDecodeError:
            continue
        found = _split_pairs(text)[0]
        clean = sum(_is_clean_label(label) for label, _ in found.values())
        key = (len(found) + clean, -rank, enc, text)
        if best is None or key[:2] > best[:2]:
            best = key
    if best is None:  # mac_roman decodes every byte, so this is unreachable
        return raw.decode("latin-1"), "latin-1"
    return best[3], best[2]


def _is_clean_label(label: str) -> bool:
    """True when a field name is plain ASCII apart from (non-breaking) spaces."""
    return all(ch.isascii() or ch.isspace() for ch in label)


def _split_pairs(text: str) -> tuple[dict[str, tuple[str, str]], list[str]]:
    """Known fields found in ``text`` -> (raw label, raw value); plus unparsed lines."""
    found: dict[str, tuple[str, str]] = {}
    other: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if ":" not in line:
            other.append(line)
            continue
        label, value = line.split(":", 1)
        key = _ALIASES.get(_squash(label))
        if key is None:
            other.append(line)
            continue
        found.setdefault(key, (label.strip(), value.strip()))
    return found, other


def field_occurrences(text: str) -> dict[str, list[str]]:
    """Every known field's raw values in file order, for fields given more than once
    (:func:`parse_clinical_text` reads the first); key -> values."""
    seen: dict[str, list[str]] = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        label, value = line.split(":", 1)
        key = _ALIASES.get(_squash(label))
        if key is not None:
            seen.setdefault(key, []).append(value.strip())
    return {k: v for k, v in seen.items() if len(v) > 1}


def normalised_value(key: str, raw: str) -> float | int | str:
    """A field's value as parsed (``'male'`` -> ``'M'``, ``'55,0'`` -> 55.0), or the stripped
    text when it does not parse; used to tell a repeated field from a contradictory one."""
    try:
        return _parse_value(Path("<field>"), key, raw)
    except DataError:
        return raw.strip()


def _parse_value(path: Path, key: str, raw: str) -> float | int | str:
    printed, kind = FIELDS[key]
    value = raw.strip().strip("\u00a0").strip()
    if value == "":
        raise DataError(f"{path}: field '{printed}' has no value")
    low = value.lower()
    if kind == "sex":
        if low in ("m", "male", "h", "homme"):
            return "M"
        if low in ("f", "female", "femme"):
            return "F"
        raise DataError(f"{path}: field '{printed}' must be M or F, got {value!r}")
    if kind == "binary":
        if low in _YES:
            return 1
        if low in _NO:
            return 0
        raise DataError(f"{path}: field '{printed}' must be 0/1 (or yes/no), got {value!r}")
    number_text = value.replace(",", ".").replace("\u00a0", "").replace(" ", "")
    try:
        number = float(number_text)
    except ValueError:
        raise DataError(f"{path}: field '{printed}' is not a number: {value!r}") from None
    if not np.isfinite(number):
        raise DataError(f"{path}: field '{printed}' is not finite: {value!r}")
    if kind in ("int", "code"):
        if number != round(number):
            raise DataError(f"{path}: field '{printed}' must be an integer, got {value!r}")
        return int(round(number))
    return number


def parse_clinical_text(text: str, source: str | Path = "<text>", encoding: str = "") -> ClinicalRecord:
    """Parse decoded text; raise :class:`DataError` naming the file and the field."""
    path = Path(source)
    found, _ = _split_pairs(text)
    missing = [FIELDS[k][0] for k in FIELDS if k not in found]
    if missing:
        raise DataError(f"{path}: missing clinical field(s): {', '.join(missing)}")
    values: dict[str, float | int | str] = {}
    errors: list[str] = []
    for key in FIELDS:
        try:
            values[key] = _parse_value(path, key, found[key][1])
        except DataError as exc:
            errors.append(str(exc).removeprefix(f"{path}: "))
    if errors:
        raise DataError(f"{path}: " + "; ".join(errors))
    extra: dict[str, str] = {}
    for line in text.splitlines():
        if ":" in line:
            label, value = line.split(":", 1)
            if _ALIASES.get(_squash(label)) is None and label.strip():
                extra[label.strip()] = value.strip()
    killip = values["killip_max"]
    if not 1 <= int(killip) <= 4:
        raise DataError(f"{path}: field 'Killip Max' must be 1-4, got {killip}")
    return ClinicalRecord(**values, source=str(path), encoding=encoding, extra=extra)


def read_clinical(path: str | Path) -> ClinicalRecord:
    """Read and parse one clinical text file.

    Raises:
        DataError: the file cannot be read, a field is missing, or a value is malformed;
            the message names the file and the field.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read clinical file ({exc.strerror or exc})") from None
    text, encoding = decode_bytes(raw)
    return parse_clinical_text(text, path, encoding)


def format_clinical(values: dict[str, object], nbsp_fields: set[str] | frozenset[str] = frozenset()) -> str:
    """Render ``Field : Value`` lines in :data:`FIELDS` order, as EMIDEC writes them.

    ``Killip Max`` gets no space before its colon; fields in ``nbsp_fields`` get a
    non-breaking space there instead of a plain one. Lines end with CRLF.
    """
    lines = []
    for key, (printed, _) in FIELDS.items():
        value = values[key]
        if isinstance(value, float):
            value = f"{value:g}"
        if key == "killip_max":
            sep = ":"
        elif key in nbsp_fields:
            sep = "\u00a0:"
        else:
            sep = " :"
        lines.append(f"{printed}{sep} {value}")
    return "\r\n".join(lines) + "\r\n"


__all__ = ["ClinicalRecord", "FIELDS", "decode_bytes", "field_occurrences", "format_clinical", "normalised_value",
           "parse_clinical_text", "read_clinical"]
