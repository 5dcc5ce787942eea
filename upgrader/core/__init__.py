"""The core layer: versions, revisions, state storage and the diagnosis. No Flask here."""
