"""The registry file format on its own: records in document order, strict decoding, rendering."""

from __future__ import annotations

import pytest

from novakms.auth import registry_file
from novakms.auth.guardians import GuardianSet, no_guardians
from novakms.auth.model import App, AppVersion, Instance
from novakms.errors import RegistryFormatError
from tests.auth.registry_documents import document


def test_records_come_in_document_order_with_their_locations() -> None:
    kms_app_id, entries = registry_file.parse_document(document())
    listed = [(entry.where, type(entry.record).__name__) for entry in entries]
    assert kms_app_id == 1
    assert listed[:3] == [("operators[0]", "str"), ("operators[1]", "str"), ("apps[0]", "App")]
    assert ("apps[1].versions[1]", "AppVersion") in listed
    assert next(w for w, kind in listed if kind == "Instance") == "instances[0]"


def test_records_are_parsed_lazily_so_the_first_fault_is_reported_first() -> None:
    data = document()
    data["instances"][0]["zk_verified"] = "yes"
    _, entries = registry_file.parse_document(data)
    first = next(entries)  # the operators parse before the bad instance is reached
    assert first.where == "operators[0]"
    with pytest.raises(RegistryFormatError, match=r"instances\[0\]\.zk_verified"):
        list(entries)


def test_the_top_level_is_checked_at_once() -> None:
    with pytest.raises(RegistryFormatError, match="unknown key"):
        registry_file.parse_document({"nodes": []})
    with pytest.raises(RegistryFormatError, match="kms_app_id"):
        registry_file.parse_document({"kms_app_id": 0})


@pytest.mark.parametrize(
    ("raw", "match"),
    [(b'{"a": 1, "a": 2}', "duplicate JSON key"), (b'{"a": NaN}', "NaN"), (b"\xff", "utf-8")],
)
def test_decoding_is_strict(raw: bytes, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        registry_file.decode_document(raw)


def test_rendering_reads_back_the_same_records() -> None:
    _, entries = registry_file.parse_document(document())
    records = [entry.record for entry in entries]
    rendered = registry_file.render_document(
        kms_app_id=1,
        operators=[r for r in records if isinstance(r, str)],
        apps=[r for r in records if isinstance(r, App)],
        versions=[r for r in records if isinstance(r, AppVersion)],
        instances=[r for r in records if isinstance(r, Instance)],
        guardians=next((r for r in records if isinstance(r, GuardianSet)), no_guardians()),
    )
    _, again = registry_file.parse_document(rendered)
    assert sorted(map(repr, (e.record for e in again))) == sorted(map(repr, records))
