"""Who may use an appspace besides its owner, and how they become a session on its host.

users     adding friends by address, their permissions, invitations
sessions  one-time login tokens from the panel, the sessions they become, revocation
"""
