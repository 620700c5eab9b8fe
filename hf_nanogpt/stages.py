"""The three training stages, named once for recipes, folders, report sections, scripts and the card.

| stage  | recipe `stage:` | folder in the run dir | script               | report section | card column |
|--------|-----------------|-----------------------|----------------------|----------------|-------------|
| `base` | `base`          | `base/`               | `scripts/pretrain.py`| `base-train`   | `BASE`      |
| `mid`  | `mid`           | `mid/`                | `scripts/midtrain.py`| `mid-train`    | `MID`       |
| `sft`  | `sft`           | `sft/`                | `scripts/sft.py`     | `sft-train`    | `SFT`       |

Recipes written before this table said `stage: pretrain`; that spelling is still read (as `base`),
so older run folders and recipe files keep working.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class StageInfo:
    """One training stage: its name and everything named after it."""

    name: str
    script: str
    description: str

    @property
    def folder(self) -> str:
        """Sub-folder of the run directory holding this stage's model (`out/base`, ...)."""
        return self.name

    @property
    def train_section(self) -> str:
        """Report-card section the training loop writes (`base-train`, ...)."""
        return f"{self.name}-train"

    @property
    def title(self) -> str:
        """Column heading on the report card and model card (`BASE`, ...)."""
        return self.name.upper()


STAGES = {
    "base": StageInfo("base", "scripts/pretrain.py", "pretraining on a text corpus"),
    "mid": StageInfo("mid", "scripts/midtrain.py", "mid-training on a chat task mixture"),
    "sft": StageInfo("sft", "scripts/sft.py", "supervised fine-tuning on chat conversations"),
}
STAGE_NAMES = tuple(STAGES)
LEGACY_STAGE_NAMES = {"pretrain": "base"}


def stage_info(name: str) -> StageInfo:
    """The stage called `name` (`base`, `mid`, `sft`; the legacy `pretrain` means `base`)."""
    name = LEGACY_STAGE_NAMES.get(name, name)
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}: expected one of {', '.join(STAGE_NAMES)}")
    return STAGES[name]


__all__ = ["LEGACY_STAGE_NAMES", "STAGES", "STAGE_NAMES", "StageInfo", "stage_info"]
