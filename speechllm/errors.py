"""The project's own errors: things a user can fix, each message naming the file (row, name) and
what to do. The `speechllm` command prints them as one line and exits 2, without a traceback
(`--debug` or SPEECHLLM_DEBUG=1 shows it). Each also keeps the built-in base callers already catch
(ValueError, FileNotFoundError, KeyError …)."""

from __future__ import annotations


class SpeechLLMError(Exception):
    """Base of every error the `speechllm` command reports as one line (exit code 2)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class ManifestError(SpeechLLMError, ValueError):
    """A manifest (or other JSONL/data file) that cannot be used as it is."""


class CheckpointError(SpeechLLMError, FileNotFoundError):
    """A path that should be a run directory (`checkpoints/<run>/`) or checkpoint file is not one."""


class ModelNotFoundError(SpeechLLMError, FileNotFoundError):
    """A model name or path that resolves to no usable model folder."""


class ModelUnavailableError(SpeechLLMError, RuntimeError):
    """A model that is neither local nor an offline pack, and the hub cannot provide it."""


class UnknownNameError(SpeechLLMError, KeyError, ValueError):
    """A name (pack, task, method, engine, noise kind …) that is not among the known ones; the message
    lists them. Also a ValueError: an unknown choice is a bad value as much as a failed lookup."""


class ConfigError(SpeechLLMError, ValueError):
    """A flag or config value (or a combination of them) that cannot work; the message names the option."""


class InputPathError(SpeechLLMError, FileNotFoundError):
    """A path given on the command line (or in a config) that is missing or not the kind of file/folder
    expected (an evaluation run, a suite, a corpus folder)."""


class OutputStateError(SpeechLLMError, ValueError, RuntimeError):
    """An output folder whose contents do not fit this run: rows or a saved position made with other
    settings, a missing state file, a non-empty `--out`. The message says what to delete or change."""


class OutputExistsError(SpeechLLMError, FileExistsError):
    """An `--out` that already holds files and would be overwritten; choose a new one."""


class MissingToolError(SpeechLLMError, RuntimeError):
    """An external program or download the step needs (espeak-ng, sox, a noise corpus) is not available."""


def one_line(err: BaseException | str) -> str:
    """The message on one line (multi-line how-tos joined), for the CLI's error report. An error
    re-raised from a DataLoader worker carries the worker's whole traceback in its message (torch
    rebuilds it as `Caught X in DataLoader worker ...\nOriginal Traceback ...`): only the original
    message is kept."""
    text = str(err)
    if isinstance(err, BaseException) and "\nOriginal Traceback" in text:
        marker = f"{type(err).__name__}: "
        text = text[text.rfind(marker) + len(marker):] if marker in text else text
    return " ".join(line.strip() for line in text.splitlines() if line.strip())
