"""The arch tier: a shrunk copy of an architecture, random weights, every switch kept.

From a config.json (and tokenizer files when there are any) build a small model of the same
architecture: few layers (one of each layer kind, in the released order), small widths, few
experts, a small vocabulary, but the released head dims, routing top-k, sliding window, KV
sharing, per-layer overrides and dtype. Engines reject other head dims or fail only at generate,
so a shrink that changed a switch would turn our choice into a false verdict on the engine.

Standard library at import: the planning half (`shrink_config_dict`) is pure and runs anywhere;
the building half imports transformers and torch inside its functions and so runs in the
transformers engine environment (the probe child side).

    python -m probes.shrink CONFIG_OR_DIR OUT_DIR [--model-type T] [--check]
    python -m probes.shrink --list-types          # every causal-LM type, then sweep_variants.json
    python -m probes.shrink --sweep OUT_ROOT [--types a,b] [--report failures.json]
"""

from probes.shrink.build import (
    NESTED_BOOKKEEPING,
    TOKENIZER_FILES,
    ShrinkResult,
    check_generates,
    count_params_meta,
    model_class,
    plan_shrink,
    shrink_config,
    shrink_path,
)
from probes.shrink.catalogue import (
    causal_lm_model_types,
    load_variants,
    recipe_revision,
    shrink_model_type,
    split_variant,
    sweep,
    sweep_revision,
    sweep_types,
)
from probes.shrink.config import ShrinkPlan, choose_layers, shrink_config_dict
from probes.shrink.rules import (
    RULES_PATH,
    SHRINK_VERSION,
    VARIANTS_PATH,
    Rules,
    ShrinkError,
    evaluate,
    load_rules,
    rules_text,
)

__all__ = [
    "NESTED_BOOKKEEPING",
    "RULES_PATH",
    "SHRINK_VERSION",
    "TOKENIZER_FILES",
    "VARIANTS_PATH",
    "Rules",
    "ShrinkError",
    "ShrinkPlan",
    "ShrinkResult",
    "causal_lm_model_types",
    "check_generates",
    "choose_layers",
    "count_params_meta",
    "evaluate",
    "load_rules",
    "load_variants",
    "model_class",
    "plan_shrink",
    "recipe_revision",
    "rules_text",
    "shrink_config",
    "shrink_config_dict",
    "shrink_model_type",
    "shrink_path",
    "split_variant",
    "sweep",
    "sweep_revision",
    "sweep_types",
]
