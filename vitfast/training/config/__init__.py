"""The training configuration: a dataclass of options per component (model.py, data.py, optimization.py,
run.py; each method's beside its method in training/methods/; vitfast.eval's in evaluation.py), their
flags made by command_line.py, resolved from defaults, the model's, the method's and the data's own,
config files, flags and --set (resolve.py) into the flat dict a run records as config.yaml (files.py) and
resumes from (resume.py)."""
from ...cli import UsageError
from .component import Component, Option, option
from .data import AugmentOptions
from .files import dump, packaged_configs, read_config_file, recorded, upgraded
from .flags import FOREIGN, RENAMED, as_flags, flag_of, origin_of, show
from .kinds import load_yaml, parse_kv, split_top_level
from .model import MODEL_DEFAULTS, creation_kwargs
from .options import components, data_defaults, from_model_defaults, method_defaults, options, own_defaults
from .resolve import build_parser, check_config, parse_value, resolve, typed
from .resume import RUN_CONTROL, for_resume

SUPERVISED_ONLY = AugmentOptions.SUPERVISED_ONLY
ConfigError = UsageError  # the name earlier releases used

__all__ = ["Component", "Option", "option", "resolve", "build_parser", "check_config", "parse_value", "typed",
           "options", "components", "own_defaults", "from_model_defaults", "method_defaults", "data_defaults",
           "MODEL_DEFAULTS", "creation_kwargs", "for_resume", "RUN_CONTROL", "recorded", "upgraded", "dump",
           "read_config_file", "packaged_configs", "flag_of", "origin_of", "as_flags", "show", "RENAMED",
           "FOREIGN", "load_yaml", "parse_kv", "split_top_level", "SUPERVISED_ONLY", "ConfigError"]
