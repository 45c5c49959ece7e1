"""Releases: the artifact store, signed metadata (TUF) and the device client, the model card and
report, what each profile ships."""
