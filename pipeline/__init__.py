"""The middle floor between the scripts and measures/: the stage contract (pipeline.contract) and the loaded run
(pipeline.loaded) that every measurement stage uses (DESIGN.md, "Floors")."""
