"""The panel's backup pages.

pages    an appspace's backups: list, back up now, policy, restore, download, delete
forms    their forms
uploads  the upload handler of restore and import archives
"""
