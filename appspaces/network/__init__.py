"""An appspace's network: the allowlist as its owner manages it (approvals), and the
connections its sandbox refused, shown for approval."""
