"""Notices: what needs a person's attention, shown in the panel until it is resolved and sent by
email once (with a reminder while it stays true), as each person chose.

kinds     the registry: each part registers the kinds of notice it raises, with a check that
          reads the current state (Condition rows); CheckUnavailable when it cannot tell
models    Notice (one open row per recipient, kind and key) and NoticePreference (email on/off)
evaluate  one pass: run every check, open, refresh and resolve notices, then send the emails due
mail      the plain-text email of one person's new notices and reminders
views     the panel: preferences (account settings), dismissing a notice; `for_user` for pages

It imports nothing of the platform above accounts: the conditions come from the parts that own
them (appspaces/notices.py for appspaces and backups, dropserver_site/conditions/ for the
instance), registered when their apps are ready.
"""
