# Recording stand-ins for the Vitis HLS Tcl commands a kernel's run_hls.tcl uses, so it runs under tclsh.
#
# Every call is printed as "STUB <cmd> <args>" and the *_design commands print Vitis HLS's
# "Finished Command <cmd>" line. csynth_design copies $::stub::csynth_xml (when set) to where Vitis HLS
# writes its report: <project>/<solution>/syn/report/csynth.xml in the current directory.

namespace eval ::stub {
    variable csynth_xml ""
    variable project ""
    variable solution ""
}

proc ::stub::call {cmd arglist} {
    puts "STUB $cmd $arglist"
}

foreach cmd {set_top add_files set_part create_clock config_export} {
    proc $cmd {args} [format {::stub::call %s $args; return ""} $cmd]
}

proc open_project {args} { ::stub::call open_project $args; set ::stub::project [lindex $args end] }
proc open_solution {args} {
    ::stub::call open_solution $args
    set ::stub::solution [lindex [lsearch -all -inline -not -glob $args -*] 0]
}

foreach cmd {csim_design cosim_design export_design} {
    proc $cmd {args} [format {::stub::call %s $args; puts "INFO: \[HLS 200-111\] Finished Command %s"} $cmd $cmd]
}

proc csynth_design {args} {
    ::stub::call csynth_design $args
    if {$::stub::csynth_xml ne ""} {
        set dir [file join $::stub::project $::stub::solution syn report]
        file mkdir $dir
        file copy -force $::stub::csynth_xml [file join $dir csynth.xml]
    }
    puts "INFO: \[HLS 200-111\] Finished Command csynth_design"
}
