"""The SMTP edge on aiosmtpd: inbound (port 25), authenticated submission (587 STARTTLS, 465
implicit TLS), local delivery through a group commit, and the hand-off to the outbound queue.

``service.make_services`` is what `civicmail serve` starts; ``replies`` holds every reply text.
"""
