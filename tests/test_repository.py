"""The repository stands alone: a user's clone has nothing beside it, so no tracked file may point
outside the checkout, and every relative link in the Markdown docs must land on a file that exists."""
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")  # [text](target) or [text](target#anchor)


def tracked(*patterns: str) -> list[Path]:
    out = subprocess.run(["git", "ls-files", *patterns], cwd=ROOT, capture_output=True, text=True, check=True)
    return [ROOT / line for line in out.stdout.splitlines()]


def test_every_relative_markdown_link_resolves():
    docs = tracked("*.md")
    assert ROOT / "docs" / "architecture.md" in docs
    broken = [f"{doc.relative_to(ROOT)}: {target}" for doc in docs for target in LINK.findall(doc.read_text())
              if "://" not in target and not target.startswith("mailto:") and not (doc.parent / target).exists()]
    assert broken == []


def test_no_tracked_file_refers_outside_the_checkout():
    outside = re.compile(r"\.\./shared|DESIGN\.md|parents\[\d\]\s*\.\s*parent\b|ROOT\.parent")
    found = [f"{path.relative_to(ROOT)}: {m.group(0)}" for path in tracked() if path.suffix not in {".gguf"}
             and path.is_file() and path.stat().st_size < 2_000_000
             for m in outside.finditer(path.read_text(errors="ignore"))
             if path != Path(__file__).resolve()]
    assert found == []
