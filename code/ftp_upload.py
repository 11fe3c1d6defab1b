"""Upload files to the in-cluster FTP server: `python /code/ftp_upload.py DIR` (the `demo.upload --target ftp` Job).

DIR holds the files and `manifest.json` mapping each file to its remote path. Each file is stored under a
temporary name and renamed when complete, so the event server never sees a half-written `.csv`.
Runs inside the cluster, where passive-mode data connections reach vsftpd through its Service.
Settings: FTP_HOST (default vsftpd), FTP_PORT (21), FTP_USER, FTP_PASSWORD.
"""

from __future__ import annotations

import ftplib
import json
import os
import posixpath
import sys


def ensure_dirs(ftp: ftplib.FTP, remote_dir: str) -> None:
    path = ""
    for part in [p for p in remote_dir.split("/") if p]:
        path = f"{path}/{part}"
        try:
            ftp.mkd(path)
        except ftplib.error_perm as exc:  # 550: exists (or not allowed: the upload will then say so)
            if not str(exc).startswith("550"):
                raise


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: ftp_upload.py DIR", file=sys.stderr)
        return 2
    folder = argv[0]
    with open(os.path.join(folder, "manifest.json"), encoding="utf-8") as handle:
        manifest: dict[str, str] = json.load(handle)
    env = os.environ
    ftp = ftplib.FTP()
    ftp.connect(env.get("FTP_HOST", "vsftpd"), int(env.get("FTP_PORT", "21")), timeout=30)
    ftp.login(env["FTP_USER"], env["FTP_PASSWORD"])
    ftp.set_pasv(True)
    try:
        for local, remote in manifest.items():
            remote = "/" + remote.lstrip("/")
            ensure_dirs(ftp, posixpath.dirname(remote))
            partial = remote + ".part"
            with open(os.path.join(folder, local), "rb") as data:
                ftp.storbinary(f"STOR {partial}", data)
            ftp.rename(partial, remote)
            print(json.dumps({"uploaded": remote}), flush=True)
    finally:
        try:
            ftp.quit()
        except (ftplib.all_errors):
            ftp.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
