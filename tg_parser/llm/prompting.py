"""Prompts as files: packaged in tg_parser/llm/prompts/, overridable by PROMPTS_DIR.

A prompt NAME is two files: ``NAME.system.md`` (the instructions) and ``NAME.user.md`` (a
``string.Template`` for the per-item input, e.g. ``$text``). A file of the same name in PROMPTS_DIR
replaces the packaged one; a missing file there falls back to the package. `prompt_id` is derived from
the text actually used, so every document records exactly which prompt produced it and a changed
prompt is visible in the data.
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from tg_parser.errors import ConfigError

PACKAGE = "tg_parser.llm"
FOLDER = "prompts"


@dataclass(frozen=True)
class Prompt:
    name: str
    system: str
    user_template: str
    prompt_id: str
    origin: str  # "package" or the override directory

    def render(self, **values: object) -> str:
        """The user input for one item; every placeholder must be given."""
        return string.Template(self.user_template).substitute({k: str(v) for k, v in values.items()})


def prompt_hash(*parts: str) -> str:
    digest = hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest()
    return digest[:16]


def load_prompt(name: str, prompts_dir: Path | None = None, *, placeholders: tuple[str, ...] = ()) -> Prompt:
    """Read prompt NAME; `placeholders` are the template fields the caller fills (checked here, at start)."""
    if prompts_dir is not None and not prompts_dir.is_dir():
        raise ConfigError(
            f"PROMPTS_DIR {prompts_dir} is not a directory",
            "create it with your prompt files, or unset PROMPTS_DIR to use the packaged prompts",
        )
    texts: list[str] = []
    origin = "package"
    for suffix in ("system", "user"):
        filename = f"{name}.{suffix}.md"
        override = prompts_dir / filename if prompts_dir is not None else None
        if override is not None and override.is_file():
            texts.append(_read(override))
            origin = str(prompts_dir)
            continue
        packaged = resources.files(PACKAGE).joinpath(FOLDER, filename)
        if not packaged.is_file():
            raise ConfigError(f"no prompt file {filename}", "reinstall tg-parser or add it to PROMPTS_DIR")
        texts.append(packaged.read_text(encoding="utf-8"))
    system, user = texts
    _check_template(name, user, placeholders)
    return Prompt(
        name=name,
        system=system.strip(),
        user_template=user.strip("\n"),
        prompt_id=f"{name}:{prompt_hash(system.strip(), user.strip(chr(10)))}",
        origin=origin,
    )


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read prompt file {path}: {exc}", "check the file in PROMPTS_DIR") from None


def _check_template(name: str, template: str, placeholders: tuple[str, ...]) -> None:
    parsed = string.Template(template)
    if not parsed.is_valid():
        raise ConfigError(
            f"prompt {name}.user.md has an invalid placeholder",
            "placeholders are $name or ${name}; write $$ for a literal dollar sign",
        )
    unknown = sorted(set(parsed.get_identifiers()) - set(placeholders))
    if placeholders and unknown:
        raise ConfigError(
            f"prompt {name}.user.md uses unknown placeholder(s): {', '.join('$' + u for u in unknown)}",
            f"available: {', '.join('$' + p for p in placeholders)}",
        )


def estimate_tokens(text: str) -> int:
    """A rough token count without a tokenizer: ~4 characters per token for ASCII, ~2.5 otherwise.

    Used only for `--dry-run` estimates; real counts come from the replies' usage.
    """
    ascii_chars = sum(1 for ch in text if ch < "\x80")
    return int(ascii_chars / 4 + (len(text) - ascii_chars) / 2.5) + 1
