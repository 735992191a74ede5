"""config.ini [slurm] and --slurm NAME=VALUE, read into SlurmSettings (no cluster needed)."""

from __future__ import annotations

import pytest

from xvalkit.errors import XvalError
from xvalkit.executors.slurm_settings import SlurmSettings


def test_memory_may_be_a_fraction_of_a_gigabyte_and_whole_numbers_stay_whole():
    settings = SlurmSettings.from_config({"mem_gb": 16}, ["mem_gb=1.5", "cpus_per_task=4"])
    assert settings.mem_gb == 1.5 and settings.submitit_parameters()["mem"] == "1536MB"
    assert settings.describe().endswith("1.5 GB per task")
    assert SlurmSettings.from_config({"mem_gb": 16}).submitit_parameters()["mem"] == "16384MB"
    with pytest.raises(XvalError, match=r"cpus_per_task = 1\.5: expected a whole number"):
        SlurmSettings.from_config({}, ["cpus_per_task=1.5"])
