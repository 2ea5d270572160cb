"""`xpresso`: the command-line client of an xpresso-env server. It talks HTTP only (never to
storage), so it works against any server a user can reach: see README "The xpresso client"."""
