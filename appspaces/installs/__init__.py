"""App installs: from an uploaded package, a package URL or an app listing to an installed
version.

service    starts an install Job and runs it (the worker's entry point)
pipeline   the steps of one install: fetch, extract, manifest, place, app-init, validate
checks     the pipeline's judgements (routes, migrations, may a version join an app)
staging    packages on their way in: DS_DATA_DIR/uploads/
listings   what version a listing offers now ("a newer version is available")
upkeep     periodic cleanup of what crashed or abandoned installs leave
examples   the example apps installed for the instance's first admin
versions   semver order, deleting versions and apps
"""
