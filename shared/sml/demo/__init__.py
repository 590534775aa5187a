"""The ``sml demo`` story (``story``) and the traffic it sends (``traffic``); sits on top of the
local runtime and every capability, like the command line.
"""
