"""Clinical text parser: real cp1252 / mac_roman bytes, NBSP separators, any order."""

from __future__ import annotations

from pathlib import Path

import pytest

from attri_ssc.data.clinical import FIELDS, decode_bytes, format_clinical, parse_clinical_text, read_clinical
from attri_ssc.errors import DataError

FIXTURES = Path(__file__).parent / "fixtures" / "clinical"


def test_fixtures_hold_the_real_quirks():
    cp = (FIXTURES / "Case P101.txt").read_bytes()
    mr = (FIXTURES / "Case N102.txt").read_bytes()
    for raw in (cp, mr):
        with pytest.raises(UnicodeDecodeError):
            raw.decode("utf-8")
        assert b"Killip Max:" in raw
        assert b"\n\n" in raw.replace(b"\r", b"")  # blank lines
    assert b"\xa0:" in cp and b"\xe9" in cp  # cp1252 NBSP and é
    assert b"\xca:" in mr and b"\x8e" in mr  # mac_roman NBSP and é


def test_cp1252_fixture():
    rec = read_clinical(FIXTURES / "Case P101.txt")
    assert rec.encoding == "cp1252"
    assert (rec.fevg, rec.age, rec.sex, rec.tobacco, rec.killip_max) == (45.0, 63.0, "M", 3, 2)
    assert (rec.arterial_hypertension, rec.overweight, rec.diabetes, rec.familial_history, rec.ecg_st) == (1, 0, 0, 1, 1)
    assert rec.troponin == pytest.approx(12.5)  # decimal comma
    assert rec.ntprobnp == 1840.0 and rec.gap_between_slices == 10.0
    assert rec.extra == {"Commentaire": "données anonymisées"}
    values = rec.attribute_values()
    assert values["sex"] == 1.0 and values["fevg"] == 45.0


def test_mac_roman_fixture():
    rec = read_clinical(FIXTURES / "Case N102.txt")
    assert rec.encoding == "mac_roman"
    assert (rec.fevg, rec.age, rec.sex, rec.killip_max, rec.gap_between_slices) == (66.0, 71.0, "F", 1, 12.0)
    assert rec.diabetes == 1 and rec.troponin == pytest.approx(0.03)
    assert rec.extra == {"Remarque": "vérifié"}
    assert rec.attribute_values()["sex"] == 0.0


def test_decode_prefers_utf8_when_valid():
    text, enc = decode_bytes("FEVG : 50\n".encode("utf-8"))
    assert enc == "utf-8" and text == "FEVG : 50\n"


def test_missing_field_names_file_and_field():
    path = FIXTURES / "missing_fevg.txt"
    with pytest.raises(DataError) as err:
        read_clinical(path)
    msg = str(err.value)
    assert "missing_fevg.txt" in msg and "FEVG" in msg and "missing" in msg


def test_non_numeric_field_names_file_and_field():
    with pytest.raises(DataError) as err:
        read_clinical(FIXTURES / "nonnumeric_age.txt")
    msg = str(err.value)
    assert "nonnumeric_age.txt" in msg and "'Age'" in msg and "sixty-three" in msg


def test_all_bad_values_are_reported_together():
    good = (FIXTURES / "Case P101.txt").read_bytes().decode("cp1252")
    bad = good.replace("Sex : M", "Sex : X").replace("Troponin : 12,5", "Troponin : high")
    with pytest.raises(DataError) as err:
        parse_clinical_text(bad, "x.txt")
    assert "'Sex'" in str(err.value) and "'Troponin'" in str(err.value)


def test_unreadable_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="cannot read clinical file"):
        read_clinical(tmp_path / "Case P999.txt")


def test_format_round_trip_through_cp1252():
    values = {
        "gap_between_slices": 9.5, "sex": "F", "age": 58, "tobacco": 2, "overweight": 1,
        "arterial_hypertension": 0, "diabetes": 0, "familial_history": 1, "ecg_st": 1,
        "troponin": 3.25, "killip_max": 3, "fevg": 38.0, "ntprobnp": 2210.0,
    }
    text = format_clinical(values, nbsp_fields={"age", "fevg", "sex"})
    raw = text.encode("cp1252")
    assert b"Age\xa0:" in raw and b"Killip Max:" in raw and b"Diabetes :" in raw
    decoded, enc = decode_bytes(raw)
    rec = parse_clinical_text(decoded, "round.txt", enc)
    for key in FIELDS:
        expected = values[key]
        assert getattr(rec, key) == (pytest.approx(expected) if isinstance(expected, float) else expected), key
