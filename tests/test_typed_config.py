"""The one configuration mechanism (emo.typed_config): types, unknown keys, file and key named."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from emo.typed_config import ConfigError, from_mapping, load_yaml, to_dict


@dataclass
class Inner:
    rate: float = 1.0
    name: str = "a"
    mode: Literal["fast", "slow"] = "fast"


@dataclass
class Outer:
    steps: int = 3
    flag: bool = False
    maybe: int | None = None
    sizes: list[int] = field(default_factory=lambda: [1, 2])
    betas: tuple[float, float] = (0.9, 0.99)
    per_stage: dict[int, Inner] = field(default_factory=dict)
    inner: Inner = field(default_factory=Inner)

    def __post_init__(self):
        if self.steps < 0:
            raise ValueError("steps must be >= 0")


def test_defaults_and_nested_values_are_built_and_converted():
    cfg = from_mapping(Outer, {"steps": 5, "inner": {"rate": 2}, "betas": [0.5, 0.6],
                               "per_stage": {"2": {"name": "b"}}})
    assert cfg.steps == 5 and cfg.flag is False and cfg.sizes == [1, 2]
    assert cfg.inner.rate == 2.0 and isinstance(cfg.inner.rate, float)
    assert cfg.betas == (0.5, 0.6)
    assert cfg.per_stage == {2: Inner(name="b")}
    assert from_mapping(Outer, to_dict(cfg)) == cfg
    assert from_mapping(Outer, None) == Outer()


@pytest.mark.parametrize("data, fragment", [
    ({"stepz": 1}, "unknown key(s) stepz"),
    ({"inner": {"rat": 1}}, "inner: unknown key(s) rat"),
    ({"steps": "3"}, "steps: expected int"),
    ({"steps": True}, "steps: expected int"),
    ({"flag": "yes"}, "flag: expected bool"),
    ({"rate": 1}, "unknown key(s) rate"),
    ({"inner": {"rate": "fast"}}, "inner.rate: expected float"),
    ({"inner": {"mode": "medium"}}, "inner.mode: must be one of"),
    ({"sizes": [1, "x"]}, "sizes[1]: expected int"),
    ({"betas": [0.1]}, "betas: expected 2 values"),
    ({"per_stage": {"one": {}}}, "per_stage: key 'one' is not an integer"),
    ({"inner": 3}, "inner: expected a mapping"),
    ({"maybe": 2.5}, "maybe: expected"),
    ({"steps": -1}, "steps must be >= 0"),
])
def test_bad_values_name_the_file_and_the_key(data, fragment):
    with pytest.raises(ConfigError) as err:
        from_mapping(Outer, data, source="conf.yaml")
    assert str(err.value).startswith("conf.yaml: ")
    assert fragment in str(err.value)


def test_load_yaml_reads_files_and_refuses_bad_ones(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("steps: 7\ninner:\n  name: z\n")
    assert load_yaml(Outer, good) == Outer(steps=7, inner=Inner(name="z"))
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_yaml(Outer, tmp_path / "list.yaml")
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(Outer, tmp_path / "missing.yaml")
    (tmp_path / "typo.yaml").write_text("inner:\n  nmae: z\n")
    with pytest.raises(ConfigError, match=r"typo\.yaml: inner: unknown key\(s\) nmae"):
        load_yaml(Outer, tmp_path / "typo.yaml")


def test_project_configs_load_and_refuse_typos(tmp_path):
    from dataprep.config import load_config as load_dataprep
    from emo.config import load_config as load_emo

    assert load_emo("tiny").model.num_frames > 0
    assert load_dataprep().faces.crop_size > 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("faces:\n  crop_sise: 256\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: faces: unknown key\(s\) crop_sise"):
        load_dataprep(bad)
    bad.write_text("model:\n  num_frames: twelve\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: model\.num_frames: expected int"):
        load_emo(bad)
