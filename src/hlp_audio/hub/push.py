"""Hub publishing, timm-style: build the repo folder locally, then one ``upload_folder`` commit."""

from __future__ import annotations

import os
from typing import Optional

__all__ = ["push_folder"]


def push_folder(
    folder: "os.PathLike[str] | str",
    repo_id: str,
    *,
    repo_type: str = "model",
    commit_message: str = "Upload with hlp-audio",
    private: bool = False,
    token: Optional[str] = None,
    space_sdk: Optional[str] = None,
    api=None,
):
    """Create ``repo_id`` if needed and upload ``folder`` as a single commit.

    ``api`` is an ``HfApi`` (or anything with ``create_repo`` / ``upload_folder``): tests pass a
    fake one. Returns what ``upload_folder`` returns (a ``CommitInfo`` on the real Hub).
    """
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"nothing to push: {folder} is not a folder")
    if not os.listdir(folder):
        raise ValueError(f"nothing to push: {folder} is empty")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    create_kwargs = dict(repo_id=repo_id, repo_type=repo_type, private=private, exist_ok=True)
    if space_sdk is not None:
        create_kwargs["space_sdk"] = space_sdk
    api.create_repo(**create_kwargs)
    return api.upload_folder(
        folder_path=str(folder),
        repo_id=repo_id,
        repo_type=repo_type,
        commit_message=commit_message,
    )
