"""What support staff read: the doctor report (as data and as text) and its bundle."""
