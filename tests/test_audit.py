"""The audit trail lives a year: it rotates by size beside itself and nothing is dropped."""

from __future__ import annotations


def test_the_audit_log_rotates_beside_itself_and_nothing_is_dropped(tmp_path):
    """2,000 audited events with --audit-max-mb 0.02: rotated files whose lines add up to 2,000, read in order by
    scripts/audit.py (the first and the last found), every file owner-only."""
    from mura_mt.audit import AuditLog, audit_files, read_audit
    from scripts.audit import main as audit_main

    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, max_bytes=int(0.02 * 2**20))
    for n in range(2000):
        log.record("study opened", "ana", "127.0.0.1", f"1.2.3.{n}", "")
    log.close()
    files = audit_files(path)
    assert len(files) > 5 and files[-1] == path and files[0].name == "audit.jsonl.1"
    assert sum(len(f.read_text().splitlines()) for f in files) == 2000
    assert all(f.stat().st_size <= 0.02 * 2**20 and oct(f.stat().st_mode & 0o777) == "0o600" for f in files)
    assert [e["study_uid"] for e in read_audit(path)] == [f"1.2.3.{n}" for n in range(2000)]
    assert [e["study_uid"] for e in audit_main([str(path), "--study", "1.2.3.0"])] == ["1.2.3.0"]
    assert [e["study_uid"] for e in audit_main([str(path), "--study", "1.2.3.1999"])] == ["1.2.3.1999"]
    again = AuditLog(path, max_bytes=int(0.02 * 2**20))  # a restart appends and goes on numbering
    again.record("login", "ana")
    again.close()
    assert len(list(read_audit(path))) == 2001
