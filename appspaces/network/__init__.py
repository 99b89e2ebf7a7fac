"""An appspace's network, as its owner decides it.

approvals  the allowlist: adding and removing entries, how each reads and what it risks
blocked    connections the sandbox refused, pulled from the supervisor, approved or dismissed
requests   what the app asked for, with its reason (requestNetwork), approved or dismissed
"""
