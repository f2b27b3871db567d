"""The Multi30k task 1 corpus (Elliott et al., 2016): download with checksums into
a cache, or read a local copy of the same files."""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import TransformerMTError
from ..files import sha256_of

log = logging.getLogger(__name__)

BASE_URL = "https://github.com/multi30k/dataset/raw/master/data/task1/raw/"
LANGUAGES = ("de", "en", "fr", "cs")
SPLITS = {"train": "train", "valid": "val", "test": "test_2016_flickr"}
SHA256 = {
    "test_2016_flickr.cs.gz": "200a4a74cc9560f051924abb9803be008d1908d77f747e9141aeb86dfd2797f1",
    "test_2016_flickr.de.gz": "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8",
    "test_2016_flickr.en.gz": "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9",
    "test_2016_flickr.fr.gz": "6d326e188d259fb1d04ac19eae3af956559b3a0b93d7635e56c90987c40c8b90",
    "train.cs.gz": "a65adb8b32e3bc664f21ecba7a6e7f6950fd1f405e135f7c312faabdb6255077",
    "train.de.gz": "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6",
    "train.en.gz": "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
    "train.fr.gz": "622e75069e9f4c577425c4f277116ce66e63a2401c0a2312d90073cb12379a3c",
    "val.cs.gz": "b63226e05c4bd5dd6a42897d74b86a1b9d2c31498252c572b1ea7f7996927fcc",
    "val.de.gz": "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a",
    "val.en.gz": "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
    "val.fr.gz": "ca3106f1a72390591d25f6c45cb4cd39dec4cd3f123e099748a3ce5256c160e9",
}


def default_cache() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "transformer_mt" / "multi30k"


def file_names(src_lang: str, tgt_lang: str) -> dict[str, tuple[str, str]]:
    """split -> (source file name, target file name)"""
    for lang in (src_lang, tgt_lang):
        if lang not in LANGUAGES:
            raise TransformerMTError(
                f"multi30k has no language {lang!r}; choose from {', '.join(LANGUAGES)}"
            )
    if src_lang == tgt_lang:
        raise TransformerMTError("source and target language must differ")
    return {
        split: (f"{stem}.{src_lang}.gz", f"{stem}.{tgt_lang}.gz")
        for split, stem in SPLITS.items()
    }


def download(name: str, cache: Path, base_url: str) -> Path:
    """Fetch one file into ``cache`` unless a copy with the right checksum is there;
    the file only appears under its name once its checksum matched."""
    target = cache / name
    if target.exists() and sha256_of(target) == SHA256[name]:
        return target
    cache.mkdir(parents=True, exist_ok=True)
    partial = cache / f"{name}.partial"
    url = base_url + name
    log.info("downloading %s", url)
    try:
        with (
            urllib.request.urlopen(url, timeout=60) as response,
            open(partial, "wb") as out,
        ):
            while block := response.read(1 << 20):
                out.write(block)
    except (urllib.error.URLError, OSError) as exc:
        partial.unlink(missing_ok=True)
        raise TransformerMTError(
            f"cannot download {url}: {getattr(exc, 'reason', exc)}; pass --data-dir "
            "with a local copy of the files instead"
        ) from None
    got = sha256_of(partial)
    if got != SHA256[name]:
        partial.unlink()
        raise TransformerMTError(
            f"checksum mismatch for {url}: expected {SHA256[name]}, got {got}"
        )
    os.replace(partial, target)
    return target


def locate(
    src_lang: str,
    tgt_lang: str,
    data_dir: str | Path | None = None,
    cache: str | Path | None = None,
    base_url: str = BASE_URL,
) -> dict[str, tuple[Path, Path]]:
    """Paths of the train/valid/test files for a language pair, checked against
    their SHA-256 sums: from ``data_dir`` if given, else downloaded into ``cache``."""
    names = file_names(src_lang, tgt_lang)
    if data_dir is not None:
        found = {}
        for split, pair in names.items():
            paths = tuple(Path(data_dir) / n for n in pair)
            for path in paths:
                if not path.exists():
                    raise TransformerMTError(
                        f"{path}: missing from the multi30k directory"
                    )
                if sha256_of(path) != SHA256[path.name]:
                    raise TransformerMTError(
                        f"{path}: checksum does not match the published multi30k file"
                    )
            found[split] = paths
        return found
    cache = Path(cache) if cache else default_cache()
    return {
        split: tuple(download(n, cache, base_url) for n in pair)
        for split, pair in names.items()
    }
