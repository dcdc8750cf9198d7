"""[render] kustomize_build_options and max_app_depth: safe kustomize options are
normalised, the ones that run code or reach out are refused naming the option."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from reconciler.config import Config, parse_config
from reconciler.errors import ConfigError


def _config(tmp_path: Path, **render: Any) -> Config:
    return parse_config(
        {
            "daemon": {"state_dir": str(tmp_path)},
            "render": render,
            "repos": [{"name": "lab", "path": str(tmp_path), "apps": ["apps"]}],
            "clusters": [
                {"name": "agentic", "mode": "apply", "kubeconfig": "k", "servers": ["https://a"]}
            ],
        },
        tmp_path / "config.toml",
    )


def test_safe_kustomize_options_are_normalised(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        kustomize_build_options="--enable-helm --load-restrictor LoadRestrictionsNone",
    )
    assert config.render.kustomize_build_options == (
        "--enable-helm",
        "--load-restrictor=LoadRestrictionsNone",
    )
    assert config.render.max_app_depth == 3
    assert _config(tmp_path, max_app_depth=1).render.max_app_depth == 1


@pytest.mark.parametrize(
    ("options", "said"),
    [
        ("--enable-alpha-plugins", "option --enable-alpha-plugins: runs plugin programs"),
        ("--enable-exec", "option --enable-exec: runs exec plugins"),
        ("--mount=type=bind", "option --mount: mounts host paths into function containers"),
        ("--network", "option --network: gives function containers the network"),
        ("--helm-command=/bin/sh", "option --helm-command: the reconciler runs its own helm"),
        ("--output=/tmp/x", "option --output: not supported"),
        ("--load-restrictor=Anything", "expected one of LoadRestrictionsRootOnly"),
        ("--enable-helm=yes", "option --enable-helm takes no value"),
    ],
)
def test_unsafe_or_unknown_kustomize_options_are_refused_naming_them(
    tmp_path: Path, options: str, said: str
) -> None:
    with pytest.raises(ConfigError) as info:
        _config(tmp_path, kustomize_build_options=f"--enable-helm {options}")
    assert "render.kustomize_build_options" in str(info.value)
    assert said in str(info.value)
