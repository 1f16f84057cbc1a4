"""Encoder options (issue 6): prefix, default/static dimensions, normalize, enrichment.

Every test runs against both implementations (``impl``); the differential
module checks that they produce the same bytes, this one checks the rules.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dtproto.errors import EncodeError, ErrorCode as E
from dtproto.normalize import ONEAGENT_INDIRECTION_FILE


def lines(enc) -> list:
    return enc.getvalue().decode("utf-8").splitlines()


def test_plain_encoder_has_an_empty_log(impl) -> None:
    enc = impl.Encoder()
    enc.gauge("a.b.c", 1.0)
    assert enc.normalizations.total == 0


def test_prefix_is_joined_with_a_dot(impl) -> None:
    enc = impl.Encoder(prefix="my.app")
    enc.gauge("cpu", 1.0)
    enc2 = impl.Encoder(prefix="my.app.")  # a trailing dot only announces the separator
    enc2.gauge("cpu", 1.0)
    assert lines(enc) == lines(enc2) == ["my.app.cpu gauge,1"]


def test_strict_mode_still_raises(impl) -> None:
    enc = impl.Encoder(prefix="p")
    with pytest.raises(EncodeError):
        enc.gauge("bad key", 1.0)
    assert enc.getvalue() == b""


def test_dimension_precedence_default_line_static(impl) -> None:
    enc = impl.Encoder(default_dimensions={"env": "default", "a": "1"},
                       static_dimensions={"env": "static", "source": "dtproto"})
    enc.gauge("m.x", 1.0, {"env": "line", "a": "2", "b": "3"})
    (rec,) = impl.decode(enc.getvalue())
    assert dict(rec.dimensions) == {"env": "static", "a": "2", "b": "3", "source": "dtproto"}


def test_precedence_is_decided_after_normalization(impl) -> None:
    enc = impl.Encoder(normalize=True, default_dimensions={"host": "default"})
    enc.gauge("m.x", 1.0, {"Host": "line"})  # "Host" normalizes to "host": the line wins
    (rec,) = impl.decode(enc.getvalue())
    assert rec.dimensions == (("host", "line"),)


def test_fifty_dimensions_counted_after_merging(impl) -> None:
    default = {"d%d" % i: "v" for i in range(30)}
    enc = impl.Encoder(default_dimensions=default)
    enc.gauge("m.x", 1.0, {"l%d" % i: "v" for i in range(20)})  # 50: fine
    with pytest.raises(EncodeError) as info:
        enc.gauge("m.x", 1.0, {"l%d" % i: "v" for i in range(21)})  # 51
    assert info.value.field == "dimensions"
    assert enc.lines == 1


def test_normalize_fixes_names_and_records_each_change(impl) -> None:
    enc = impl.Encoder(normalize=True)
    enc.gauge("cpu temp", 1.5, {"Host Name": "a\u200db"})
    enc.gauge("cpu temp", 2.5, {"Host Name": "a\u200db"})  # cached: counted again
    assert lines(enc)[0] == "cpu_temp,host_name=a_b gauge,1.5"
    log = enc.normalizations
    assert log.changed == {"metric_key": 2, "dimension_key": 2, "dimension_value": 2}
    assert log.examples[0].original == "cpu temp" and log.examples[0].normalized == "cpu_temp"


def test_normalize_drops_unsavable_keys(impl) -> None:
    enc = impl.Encoder(normalize=True)
    enc.gauge("ab", 1.0)        # too short for the server even after normalizing
    enc.gauge("dt.reserved", 1.0)
    enc.gauge(".x", 1.0)        # empty first section: no key at all
    enc.gauge("ok.key", 1.0)
    assert lines(enc) == ["ok.key gauge,1"]
    assert enc.normalizations.dropped == {"metric_key": 3}


def test_normalize_drops_unusable_dimensions(impl) -> None:
    enc = impl.Encoder(normalize=True)
    enc.gauge("m.x", 1.0, {"...": "v", "ok": "w"})
    assert lines(enc) == ["m.x,ok=w gauge,1"]
    assert enc.normalizations.dropped == {"dimension_key": 1}


def test_normalize_does_not_hide_bad_values(impl) -> None:
    enc = impl.Encoder(normalize=True)
    with pytest.raises(EncodeError):
        enc.gauge("m.x", float("nan"))
    assert enc.getvalue() == b""


def test_normalize_metadata(impl) -> None:
    enc = impl.Encoder(normalize=True, prefix="app")
    enc.metadata("cpu temp", "gauge", display_name="CPU\ttemp", unit="not a unit!")
    enc.metadata("x.y", "gauge", unit="%%%%" * 20)  # the only property is dropped: no line
    assert lines(enc) == ["#app.cpu_temp gauge dt.meta.displayName=CPUtemp"]
    assert enc.normalizations.dropped["unit"] == 2


def test_prefix_that_can_never_work_is_refused(impl) -> None:
    with pytest.raises(ValueError):
        impl.Encoder(normalize=True, prefix=".bad")


def test_add_applies_the_options(impl) -> None:
    from dtproto import Metric

    enc = impl.Encoder(normalize=True, static_dimensions={"s": "1"})
    enc.add(Metric.delta("req count", 3.0, {"Route": "/a"}))
    (rec,) = impl.decode(enc.getvalue())
    assert rec.key == "req_count" and rec.dimensions == (("route", "/a"), ("s", "1"))


def test_oneagent_enrichment(impl, tmp_path, monkeypatch) -> None:
    props = tmp_path / "dt_metadata.properties"
    props.write_text("dt.entity.host=HOST-1\ndt.entity.process_group_instance=PGI-2\n")
    (tmp_path / ONEAGENT_INDIRECTION_FILE).write_text(str(props))
    monkeypatch.chdir(tmp_path)  # the libraries look in the working directory
    from dtproto import normalize

    found = normalize.read_oneagent_metadata()
    assert found == {"dt.entity.host": "HOST-1", "dt.entity.process_group_instance": "PGI-2"}
    enc = impl.Encoder(oneagent_enrichment=True)
    enc.gauge("m.x", 1.0, {"dt.entity.host": "overridden"})
    (rec,) = impl.decode(enc.getvalue())
    # Static dimensions win over the line's own (as in the official libraries).
    assert dict(rec.dimensions) == {**{"dt.entity.host": "overridden"}, **found}


def test_missing_oneagent_file_is_not_an_error(impl, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    enc = impl.Encoder(oneagent_enrichment=True)
    enc.gauge("m.x", 1.0)
    assert impl.decode(enc.getvalue())[0].key == "m.x"


# Arbitrary Unicode names, lone surrogates and control characters included.
names = st.text(st.characters(blacklist_categories=()), max_size=40)


@pytest.mark.hypothesis
@given(prefix=st.one_of(st.none(), st.sampled_from(["app", "my app.", "x.", "0p"])),
       key=names, dims=st.dictionaries(names, names, max_size=6),
       default=st.dictionaries(names, names, max_size=3))
def test_every_normalized_line_decodes(impl, prefix, key, dims, default) -> None:
    """Issue 6, must show 1: whatever the input, what the encoder emits decodes."""
    enc = impl.Encoder(prefix=prefix, normalize=True, default_dimensions=default)
    enc.gauge(key, 1.0, dims)
    enc.count(key, 2.0, list(dims.items()))
    enc.summary(key, 1.0, 2.0, 3.0, 2, dims)
    enc.metadata(key, "gauge", display_name=key, description=key, unit=key)
    records = impl.decode(enc.getvalue())  # never raises
    assert len(records) <= 4
    for rec in records:
        assert rec.key == records[0].key


@pytest.mark.parametrize("options", [{"prefix": "pre"}, {"normalize": True},
                                     {"default_dimensions": {"d": "1"}},
                                     {"static_dimensions": {"s": "1"}}])
def test_an_endless_iterator_of_pairs_ends_with_options_too(impl, options):
    """Options merge a line's pairs by key, so more than 50 may fit; reading
    still stops (it hung on an endless iterator of one repeated pair)."""
    enc = impl.Encoder(**options)
    with pytest.raises(EncodeError) as info:
        enc.gauge("a.b", 1.0, itertools.repeat(("k", "v")))
    assert info.value.code == E.TOO_MANY_DIMENSIONS and "more than 1000 pairs" in str(info.value)
    enc.gauge("a.b", 1.0, [("k", "v")] * 1000)   # merged into one: still fits
    assert enc.lines == 1 and b",k=v" in enc.getvalue()
