"""The verbs: paths in, files and printouts out.

Each module here is one ``posefix`` verb's work at the level of files (read the inputs,
call the library, write the outputs, return a summary); :mod:`posefix.cli` parses the
command line and calls them. The library below (evaluation, diagnosis, synthesis,
refinement, the report's drawing) never imports from here.
"""
