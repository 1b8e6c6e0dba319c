*** Settings ***
Documentation     A hierarchical crew whose manager delegates to two coworkers in one reply,
...               run through litellm's real HTTP path against the fake server as a separate
...               process (delegating_server.py plays the manager). The task's usage, each
...               agent's and the cost equal the server's own count of what it served, for one
...               kickoff and for many at once, on threads and under asyncio.
Resource          crewline.resource
Library           DelegationLibrary.py
Test Setup        Start Delegating Server
Test Teardown     Stop Fake Server


*** Variables ***
${URL}    ${EMPTY}


*** Keywords ***
Start Delegating Server
    ${url}=    Start Fake Server    latency=0.05    script=delegating_server.py
    Set Test Variable    ${URL}    ${url}

Run Should Be Charged Exactly What The Server Served
    [Arguments]    ${result}    ${run}
    Should Be Equal    ${result}[error]    ${None}
    ${manager}=    Server Totals    ${run}
    ${researcher}=    Server Totals    ${run}-r
    ${writer}=    Server Totals    ${run}-w
    ${all}=    Server Totals    ${run}    ${run}-r    ${run}-w
    Should Be Equal As Integers    ${all}[requests]    4    msg=two manager turns and two coworkers
    Usage Should Equal Served    ${result}[task]    ${all}    ${run}: the task
    Usage Should Equal Served    ${result}[usage]    ${all}    ${run}: the kickoff
    Usage Should Equal Served    ${result}[agents][Crew Manager]    ${manager}    ${run}: the manager
    Usage Should Equal Served    ${result}[agents][Researcher]    ${researcher}    ${run}: the Researcher
    Usage Should Equal Served    ${result}[agents][Writer]    ${writer}    ${run}: the Writer
    ${cost}=    Cost Of    ${all}
    Amounts Should Be Equal    ${result}[task][cost]    ${cost}
    Should Be Equal    ${result}[delegated_by]    ${{["Crew Manager", "None"]}}


*** Test Cases ***
A Manager's Delegated Work Is Charged To Its Task Exactly
    ${results}=    Run Delegating Crew    ${URL}    kickoff    one
    Run Should Be Charged Exactly What The Server Served    ${results}[one]    one

The Same Under kickoff_async
    ${results}=    Run Delegating Crew    ${URL}    kickoff_async    solo
    Run Should Be Charged Exactly What The Server Served    ${results}[solo]    solo

Twenty Concurrent Kickoffs Under asyncio Each Report Only Their Own Work
    @{runs}=    Evaluate    [f"a{i}" for i in range(20)]
    ${results}=    Run Delegating Crew    ${URL}    kickoff_async    @{runs}
    FOR    ${run}    IN    @{runs}
        Run Should Be Charged Exactly What The Server Served    ${results}[${run}]    ${run}
    END

Eight Threads Kicking Off One Crew Each Report Only Their Own Work
    @{runs}=    Evaluate    [f"t{i}" for i in range(8)]
    ${results}=    Run Delegating Crew    ${URL}    kickoff    @{runs}
    FOR    ${run}    IN    @{runs}
        Run Should Be Charged Exactly What The Server Served    ${results}[${run}]    ${run}
    END

A Budget On The Crew Caps Delegated Work
    ${results}=    Run Delegating Crew    ${URL}    kickoff    capped    max_requests=2
    Should Be Equal    ${results}[capped][error]    BudgetExceededError
    ${served}=    Server Totals
    Should Be True    ${served}[requests] <= 2    msg=the server served past the cap
    Usage Should Equal Served    ${results}[capped][usage]    ${served}    the capped kickoff
