"""The delivery pipeline: agency data drops to one rendered notice per citizen, exactly once."""
