"""The contracts between the package's writers and readers, as named constants (torch-free, standard library only).

safetensors header (``metadata`` of a weights file; every value a string, JSON where noted):

- written by the trainer (``*.safetensors`` of a run) and by the importer (``import-onnx``);
- read by checkpoint.py (ModelInfo: model, num_classes, model_kwargs, class names, data config) and by the
  kernel tool (the ONNX keys below, when a weights file carries them).

ONNX ``metadata_props`` (written by export.py, read by the kernel tool; JSON where noted).

The model's constructor options are stored under :data:`ST_MODEL_KWARGS`. Files written by the importer before
this module existed store them under :data:`ST_MODEL_KWARGS_OLD` (with ``num_classes`` inside): readers use
:func:`header_model_kwargs`, which accepts both.
"""
from __future__ import annotations

import json
from typing import Any, Dict, Mapping, Optional, Tuple

# ---- safetensors header keys ---------------------------------------------------------------------------------
ST_FORMAT = 'format'                 # 'pt' (timm's and safetensors' convention)
ST_MODEL = 'model'                   # timm model name, with its pretrained tag where there is one
ST_NUM_CLASSES = 'num_classes'       # decimal integer
ST_MODEL_KWARGS = 'model_kwargs'     # JSON object: the model's constructor options (without num_classes)
ST_MODEL_KWARGS_OLD = 'model_args'   # the importer's key before: JSON object, num_classes inside
ST_CLASS_NAMES = 'class_names'       # JSON list of strings
ST_DATA_CONFIG = 'data_config'       # JSON object: timm's data config (input_size, mean, std, crop_pct, ...)
ST_EPOCH = 'epoch'                   # decimal integer (trainer)
ST_GLOBAL_POOL = 'gp'                # JSON: the trainer's --gp (global pool), null when not given
ST_IN_CHANS = 'in_chans'             # JSON: the trainer's --in-chans, null when not given

# ---- ONNX metadata_props keys ----------------------------------------------------------------------------------
ONNX_ARCHITECTURE = 'architecture'          # timm name (with tag)
ONNX_NUM_TOWERS = 'num_towers'              # decimal integer
ONNX_NUM_CLASSES = 'num_classes'            # decimal integer
ONNX_CONV1_NODES = 'conv1_nodes'            # JSON list of node names, one conv1 Conv per tower in tower order
ONNX_CHANNEL_ORDER = 'channel_order'        # 'RGB' or 'BGR' ('L' for one channel)
ONNX_MEAN = 'mean'                          # JSON list
ONNX_STD = 'std'                            # JSON list
ONNX_INPUT_SIZE = 'input_size'              # JSON [C, H, W]
ONNX_PREPROCESSING = 'preprocessing'        # in words
ONNX_LRN = 'lrn'                            # JSON object: size, alpha, beta, k, scope, convention, onnx_form, ...
ONNX_PACKAGE_VERSION = 'package_version'    # the package's version


def header_model_kwargs(meta: Mapping[str, str]) -> Tuple[Optional[Dict[str, Any]], Optional[int]]:
    """(constructor options, num_classes found among them) from a safetensors header.

    Reads :data:`ST_MODEL_KWARGS`, else the old :data:`ST_MODEL_KWARGS_OLD`; ``num_classes`` stored inside the
    options (as the old key did) is taken out and returned beside them. (None, None) when neither key holds a
    JSON object.
    """
    for key in (ST_MODEL_KWARGS, ST_MODEL_KWARGS_OLD):
        if key not in meta:
            continue
        try:
            kw = json.loads(meta[key])
        except (TypeError, json.JSONDecodeError):
            return None, None
        if not isinstance(kw, dict):
            return None, None
        kw = dict(kw)
        num = kw.pop('num_classes', None)
        return kw, num if isinstance(num, int) and not isinstance(num, bool) else None
    return None, None
